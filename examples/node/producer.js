// A Node.js service using Celeriac: submit tasks and read their results, with nothing but the
// broker's .proto files. Run a broker and a Python worker first (see README.md here), then:
//
//   node producer.js [task name]       (default: examples.get_started.tasks.add)
//
// It prints one JSON line per step, which the project's tests read.
'use strict';

const { v1, client, jsonPayload, decodePayload, errorInfo } = require('./celeriac');

const TASK = process.argv[2] || 'examples.get_started.tasks.add';
const tasks = client(v1.TaskService);

function call(method, request) {
  return new Promise((resolve, reject) => {
    tasks[method](request, { deadline: Date.now() + 30_000 }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

function report(step, fields) {
  console.log(JSON.stringify({ step, ...fields }));
}

// 1. One task, unary: Submit, then a GetResult the broker holds until the task is ready.
async function unary() {
  const started = process.hrtime.bigint();
  const submitted = await call('Submit', { task: { name: TASK, args: jsonPayload([[4, 4], {}]) } });
  const answer = await call('GetResult', { task_id: submitted.task_id, wait_ms: 20_000 });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const { state, result } = answer.result;
  report('unary', { task_id: submitted.task_id, state, result: decodePayload(result), ms });
}

// 2. A batch: SubmitMany, then GetResults held until all are ready.
async function batch() {
  const specs = [1, 2, 3].map((i) => ({ name: TASK, args: jsonPayload([[i, i], {}]) }));
  const submitted = await call('SubmitMany', { tasks: specs });
  const ids = submitted.results.map((r) => r.task_id);
  const answer = await call('GetResults', { task_ids: ids, wait_ms: 20_000 });
  report('batch', { results: answer.results.map((r) => decodePayload(r.result)) });
}

// 3. The Session stream: submit with watch set; the broker pushes the result when it is ready,
// so the wait costs no call. Several round trips, to show what one costs.
async function session(trips) {
  const stream = tasks.Session();
  const pending = new Map(); // call_id -> resolve of the submit's answer
  const pushed = new Map(); // task_id -> resolve of its pushed result
  const early = new Map(); // results pushed before their submit's answer was read
  stream.on('data', (reply) => {
    if (reply.reply === 'ready') {
      for (const result of reply.ready.results) {
        const waiter = pushed.get(result.task_id);
        if (waiter) waiter(result);
        else early.set(result.task_id, result);
      }
    } else {
      pending.get(reply.call_id)(reply);
      pending.delete(reply.call_id);
    }
  });
  let callId = 0;
  const timings = [];
  let last;
  for (let trip = 0; trip < trips; trip += 1) {
    const started = process.hrtime.bigint();
    callId += 1;
    const answered = new Promise((resolve) => pending.set(String(callId), resolve));
    stream.write({
      call_id: callId,
      submit: { task: { name: TASK, args: jsonPayload([[trip, 1], {}]) } },
      watch: true,
    });
    const reply = await answered;
    if (reply.reply !== 'submit') throw new Error(`submit failed: ${JSON.stringify(reply.error)}`);
    const taskId = reply.submit.task_id;
    last = early.get(taskId) || (await new Promise((resolve) => pushed.set(taskId, resolve)));
    early.delete(taskId);
    pushed.delete(taskId);
    timings.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  stream.end();
  timings.sort((a, b) => a - b);
  report('session', {
    trips,
    last: decodePayload(last.result),
    p50_ms: timings[Math.floor(timings.length / 2)],
  });
}

// 4. A refusal: the broker says why with a typed reason, not only a message.
async function refusal() {
  try {
    await call('Submit', { task: { name: '', args: jsonPayload([[], {}]) } });
    report('refusal', { refused: false });
  } catch (error) {
    report('refusal', { code: error.code, info: errorInfo(error) });
  }
}

async function main() {
  await unary();
  await batch();
  await session(Number(process.env.CELERIAC_TRIPS || 20));
  await refusal();
  tasks.close();
}

main().catch((error) => {
  console.error(`producer failed: ${error.message}`);
  process.exit(1);
});
