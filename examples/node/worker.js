// A Celeriac worker written in Node.js: it serves the task "node.multiply" on queue "node",
// so that a Python client (or any other) can call a task whose code is JavaScript:
//
//   node worker.js                                   # then, from Python:
//   app.send_task("node.multiply", args=(6, 7), queue="node").get()   # 42
//
// It speaks WorkerService.Session from proto/ alone: Hello, credit, assignments, outcomes,
// pings and drain. One task at a time; SIGTERM or a drain from the broker ends it cleanly.
'use strict';

const os = require('node:os');
const { v1, client, jsonPayload, decodePayload } = require('./celeriac');

const TASKS = {
  'node.multiply': (x, y) => x * y,
};
const QUEUE = process.env.CELERIAC_NODE_QUEUE || 'node';
const workerId = `node@${os.hostname()}:${process.pid}`;

const service = client(v1.WorkerService);
const stream = service.Session();

function send(kind, message) {
  stream.write({ [kind]: message });
}

function outcomeFor(assignment) {
  const task = TASKS[assignment.name];
  if (!task) {
    const error = { type: 'NotRegistered', message: `${assignment.name} is not registered` };
    return { lease_id: assignment.lease_id, state: 'TASK_STATE_FAILURE', error };
  }
  try {
    const [args, kwargs] = decodePayload(assignment.args);
    const value = task(...args, ...Object.values(kwargs || {}));
    return { lease_id: assignment.lease_id, state: 'TASK_STATE_SUCCESS', result: jsonPayload(value) };
  } catch (exc) {
    const error = { type: `node.${exc.name}`, message: exc.message, traceback: exc.stack || '' };
    return { lease_id: assignment.lease_id, state: 'TASK_STATE_FAILURE', error };
  }
}

stream.on('data', (message) => {
  switch (message.kind) {
    case 'welcome':
      console.log(`node worker ready id=${workerId} queue=${QUEUE}`);
      send('report', { credit: 1 }); // one free slot
      break;
    case 'assignments':
      for (const assignment of message.assignments.tasks) {
        const outcome = outcomeFor(assignment);
        // Started, finished and one credit back for the freed slot, in one Report.
        send('report', {
          credit: 1,
          started_lease_ids: [assignment.lease_id],
          outcomes: [outcome],
        });
        console.log(`task ${assignment.name}[${assignment.task_id}] ${outcome.state}`);
      }
      break;
    case 'ping':
      send('pong', { nonce: message.ping.nonce });
      break;
    case 'drain':
      stream.end();
      break;
    default:
      break; // cancels and rejections: nothing runs long enough here to need them
  }
});
stream.on('error', (error) => {
  if (error.code !== 1) console.error(`stream ended: ${error.message}`); // 1: cancelled by us
});
stream.on('end', () => {
  console.log('node worker stopped');
  process.exit(0);
});

process.on('SIGTERM', () => stream.end());

send('hello', {
  worker_id: workerId,
  hostname: os.hostname(),
  pid: process.pid,
  queues: [QUEUE],
  task_names: Object.keys(TASKS),
  concurrency: 1,
  pool: 'node',
  version: 'examples/node',
});
