// What every Node.js program needs to talk to a Celeriac broker: the stubs, loaded at run time
// from proto/ (nothing generated, nothing Python), the broker address, and a way to read the
// typed reason of a refusal.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');

const definition = protoLoader.loadSync(
  ['celeriac/v1/client.proto', 'celeriac/v1/worker.proto', 'celeriac/v1/admin.proto'],
  {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto files
    longs: String,
    enums: String, // 'TASK_STATE_SUCCESS' rather than 5
    defaults: true,
    oneofs: true, // message[oneofName] says which member is set
  },
);
const v1 = grpc.loadPackageDefinition(definition).celeriac.v1;

// The broker's address as the Python client takes it: CELERIAC_BROKER, host:port or
// grpc://host:port (grpcs:// needs TLS credentials, which these examples do not set up).
function brokerAddress() {
  const raw = process.env.CELERIAC_BROKER || '127.0.0.1:7475';
  return raw.replace(/^grpc:\/\//, '').replace(/\/$/, '');
}

// Options every channel of these examples uses: the same fixed flow-control window as the
// Python client (gRPC's bandwidth probing costs a round trip dear on small messages).
const CHANNEL_OPTIONS = {
  'grpc.http2.bdp_probe': 0,
  'grpc.max_receive_message_length': 4 * 1024 * 1024,
};

function client(Service) {
  return new Service(brokerAddress(), grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
}

// Task arguments and results are a UTF-8 JSON body: [args, kwargs] for arguments.
function jsonPayload(value) {
  return { content_type: 'application/json', body: Buffer.from(JSON.stringify(value), 'utf8') };
}

function decodePayload(payload) {
  if (!payload || payload.content_type !== 'application/json') return undefined;
  return JSON.parse(Buffer.from(payload.body).toString('utf8'));
}

// google.rpc.Status and ErrorInfo, as the broker puts them in the grpc-status-details-bin
// trailer. Only these two standard messages are needed to read a refusal's typed reason.
const rpcTypes = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
`, { keepCase: true }).root;
const Status = rpcTypes.lookupType('google.rpc.Status');
const ErrorInfo = rpcTypes.lookupType('google.rpc.ErrorInfo');

// The ErrorInfo of a failed call ({reason, domain, metadata}), or null when it carries none.
function errorInfo(error) {
  const raw = error && error.metadata && error.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return null;
  const status = Status.decode(raw);
  const detail = status.details.find((d) => d.type_url.endsWith('/google.rpc.ErrorInfo'));
  return detail ? ErrorInfo.toObject(ErrorInfo.decode(detail.value)) : null;
}

module.exports = { grpc, v1, client, brokerAddress, jsonPayload, decodePayload, errorInfo };
