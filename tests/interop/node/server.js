// gRPC's interop server on @grpc/grpc-js: EmptyCall, UnaryCall, StreamingInputCall,
// StreamingOutputCall, FullDuplexCall, Echo Status and Echo Metadata (grpc's
// doc/interop-test-descriptions.md, "Server"). UnimplementedCall has no handler, so
// grpc-js answers UNIMPLEMENTED; UnimplementedService is not registered.
//
//   node server.js [PORT]     prints {"port": N} once it listens on 127.0.0.1
'use strict';
const { grpc, load } = require('./proto');

const ECHO_INITIAL = 'x-grpc-test-echo-initial';
const ECHO_TRAILING = 'x-grpc-test-echo-trailing-bin';

// Echo Metadata: the initial key back in the headers, the trailing one in the trailers.
function echoMetadata(call) {
  const initial = call.metadata.get(ECHO_INITIAL);
  if (initial.length) {
    const md = new grpc.Metadata();
    md.set(ECHO_INITIAL, initial[0]);
    call.sendMetadata(md);
  }
  const trailing = new grpc.Metadata();
  const value = call.metadata.get(ECHO_TRAILING);
  if (value.length) trailing.set(ECHO_TRAILING, value[0]);
  return trailing;
}

function statusOf(request, trailing) {
  const s = request.response_status;
  if (s && s.code) return { code: s.code, details: s.message, metadata: trailing };
  return null;
}

const zeros = (n) => ({ body: Buffer.alloc(n) });
const sleep = (us) => new Promise((resolve) => setTimeout(resolve, us / 1000));

const handlers = {
  EmptyCall(call, callback) {
    callback(null, {});
  },
  UnaryCall(call, callback) {
    const trailing = echoMetadata(call);
    const status = statusOf(call.request, trailing);
    if (status) return callback(status);
    callback(null, { payload: zeros(call.request.response_size) }, trailing);
  },
  StreamingInputCall(call, callback) {
    let size = 0;
    call.on('data', (request) => {
      size += request.payload ? request.payload.body.length : 0;
    });
    call.on('end', () => callback(null, { aggregated_payload_size: size }));
    call.on('error', () => {});
  },
  async StreamingOutputCall(call) {
    const trailing = echoMetadata(call);
    for (const params of call.request.response_parameters) {
      if (params.interval_us) await sleep(params.interval_us);
      call.write({ payload: zeros(params.size) });
    }
    const status = statusOf(call.request, trailing);
    if (status) return call.emit('error', status);
    call.end(trailing);
  },
  FullDuplexCall(call) {
    const trailing = echoMetadata(call);
    let done = false;
    let queue = Promise.resolve(); // replies in order, each after its interval
    call.on('data', (request) => {
      queue = queue.then(async () => {
        if (done) return;
        const status = statusOf(request, trailing);
        if (status) {
          // Echo Status: end the call, process no further messages
          done = true;
          return call.emit('error', status);
        }
        for (const params of request.response_parameters) {
          if (params.interval_us) await sleep(params.interval_us);
          call.write({ payload: zeros(params.size) });
        }
      });
    });
    call.on('end', () => {
      queue = queue.then(() => {
        if (!done) call.end(trailing);
        done = true;
      });
    });
    call.on('error', () => {});
  },
};

function main() {
  const testing = load();
  const server = new grpc.Server();
  server.addService(testing.TestService.service, handlers);
  const port = Number(process.argv[2] || 0);
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    process.stdout.write(JSON.stringify({ port: bound }) + '\n');
  });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => server.tryShutdown(() => process.exit(0)));
  }
}

main();
