// Round trips from Node.js, for the benchmark (python -m bench, scenario latency): N sequential
// `add(1, 2)` calls over the Session stream (result pushed) or over unary calls (Submit, then a
// held GetResult), after some untimed ones. Prints one JSON object of samples in milliseconds.
//
//   node round_trips.js session|unary COUNT WARMUP [task name]
'use strict';

const { v1, client, jsonPayload, decodePayload } = require('./celeriac');

const [mode = 'session', count = '1000', warmup = '50'] = process.argv.slice(2);
const TASK = process.argv[5] || 'bench.add';
const tasks = client(v1.TaskService);
const ARGS = jsonPayload([[1, 2], {}]);

function unaryCall(method, request) {
  return new Promise((resolve, reject) => {
    tasks[method](request, { deadline: Date.now() + 30_000 }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

async function unaryTrip() {
  const submitted = await unaryCall('Submit', { task: { name: TASK, args: ARGS } });
  const answer = await unaryCall('GetResult', { task_id: submitted.task_id, wait_ms: 30_000 });
  return decodePayload(answer.result.result);
}

// One Session stream for every trip: submit with watch, then the pushed result.
function sessionTripper() {
  const stream = tasks.Session();
  let callId = 0;
  let answer = null; // resolves the current submit's answer
  const pushed = new Map(); // task_id -> result, or the resolver waiting for it
  stream.on('data', (reply) => {
    if (reply.reply === 'ready') {
      for (const result of reply.ready.results) {
        const waiting = pushed.get(result.task_id);
        if (typeof waiting === 'function') waiting(result);
        else pushed.set(result.task_id, result);
      }
    } else {
      answer(reply);
    }
  });
  const trip = async () => {
    callId += 1;
    const answered = new Promise((resolve) => {
      answer = resolve;
    });
    stream.write({ call_id: callId, submit: { task: { name: TASK, args: ARGS } }, watch: true });
    const reply = await answered;
    if (reply.reply !== 'submit') throw new Error(`submit failed: ${JSON.stringify(reply.error)}`);
    const id = reply.submit.task_id;
    const early = pushed.get(id);
    const result = early || (await new Promise((resolve) => pushed.set(id, resolve)));
    pushed.delete(id);
    return decodePayload(result.result);
  };
  return { trip, close: () => stream.end() };
}

async function main() {
  const session = mode === 'session' ? sessionTripper() : null;
  const trip = session ? session.trip : unaryTrip;
  for (let i = 0; i < Number(warmup); i += 1) await trip();
  const samples = [];
  for (let i = 0; i < Number(count); i += 1) {
    const started = process.hrtime.bigint();
    const value = await trip();
    samples.push(Number(process.hrtime.bigint() - started) / 1e6);
    if (value !== 3) throw new Error(`add(1, 2) returned ${value}`);
  }
  if (session) session.close();
  tasks.close();
  console.log(JSON.stringify({ mode, samples }));
}

main().catch((error) => {
  console.error(`round trips failed: ${error.message}`);
  process.exit(1);
});
