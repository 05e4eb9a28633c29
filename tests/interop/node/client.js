// gRPC's interop client cases on @grpc/grpc-js: the procedures of grpc's
// doc/interop-test-descriptions.md, run one after another in one process. Each case
// prints one JSON line of what it observed, in the shape of tests/interop/report.py;
// the assertions are tests/interop/spec.py's, the same for every client.
//
//   node client.js HOST:PORT CASE...
'use strict';
const { grpc, load } = require('./proto');

const CALL_TIMEOUT_MS = 10000; // bounds every call but the deadline case
const SPECIAL_MESSAGE = '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';
const OPTIONS = {
  'grpc.max_send_message_length': 8 * 1024 * 1024,
  'grpc.max_receive_message_length': 8 * 1024 * 1024,
};

const deadline = (ms = CALL_TIMEOUT_MS) => ({ deadline: Date.now() + ms });
const zeros = (n) => ({ body: Buffer.alloc(n) });
const duplexRequest = (size, body) => ({
  response_parameters: size === null ? [] : [{ size }],
  payload: zeros(body),
});

function kept(md) {
  const out = {};
  if (!md) return out;
  for (const [key, values] of Object.entries(md.getMap())) {
    if (key.startsWith('x-grpc-test-') || key === 'x-sidecar-error') {
      out[key] = Buffer.isBuffer(values) ? values.toString('hex') : String(values);
    }
  }
  return out;
}

// One call's observation: watches its metadata, messages and status events.
function watch(call, { empty = false } = {}) {
  const seen = { initial: null, trailing: null, responses: [], status: null };
  call.on('metadata', (md) => {
    seen.initial = md;
  });
  const ended = new Promise((resolve) => {
    call.on('status', (status) => {
      seen.status = status;
      seen.trailing = status.metadata;
      resolve();
    });
  });
  return {
    seen,
    push(response) {
      seen.responses.push(response);
    },
    async report() {
      await ended;
      const payloads = seen.responses.filter((r) => r.payload).map((r) => r.payload.body);
      const aggregated = seen.responses.find((r) => 'aggregated_payload_size' in r);
      return {
        code: seen.status.code,
        details: seen.status.details || '',
        responses: seen.responses.length,
        bodies: payloads.map((b) => b.length),
        zeros: payloads.every((b) => b.every((x) => x === 0)),
        aggregated: aggregated ? aggregated.aggregated_payload_size : null,
        empty: empty ? seen.responses.every((r) => Object.keys(r).length === 0) : null,
        initial: kept(seen.initial),
        trailing: kept(seen.trailing),
      };
    },
  };
}

function unary(fn, request, metadata, { empty = false } = {}) {
  let watcher;
  const call = fn(request, metadata || new grpc.Metadata(), deadline(), (err, response) => {
    if (!err) watcher.push(response);
  });
  watcher = watch(call, { empty });
  return watcher.report();
}

function clientStream(fn, requests) {
  let watcher;
  const call = fn(new grpc.Metadata(), deadline(), (err, response) => {
    if (!err) watcher.push(response);
  });
  watcher = watch(call);
  for (const r of requests) call.write(r);
  call.end();
  return watcher.report();
}

function readAll(call) {
  const watcher = watch(call);
  call.on('data', (r) => watcher.push(r));
  call.on('error', () => {});
  return watcher;
}

// The next message of a stream, or null once it has ended.
function nextMessage(call) {
  return new Promise((resolve) => {
    const onData = (r) => {
      call.off('status', onStatus);
      resolve(r);
    };
    const onStatus = () => {
      call.off('data', onData);
      resolve(null);
    };
    call.once('data', onData);
    call.once('status', onStatus);
  });
}

function cases(stub, unimplemented) {
  const bind = (client, name) => client[name].bind(client);
  return {
    async empty_unary() {
      return [await unary(bind(stub, 'EmptyCall'), {}, null, { empty: true })];
    },
    async large_unary() {
      const request = { response_size: 314159, payload: zeros(271828) };
      return [await unary(bind(stub, 'UnaryCall'), request)];
    },
    async client_streaming() {
      const requests = [27182, 8, 1828, 45904].map((n) => ({ payload: zeros(n) }));
      return [await clientStream(bind(stub, 'StreamingInputCall'), requests)];
    },
    async server_streaming() {
      const request = { response_parameters: [31415, 9, 2653, 58979].map((size) => ({ size })) };
      const call = stub.StreamingOutputCall(request, new grpc.Metadata(), deadline());
      return [await readAll(call).report()];
    },
    async ping_pong() {
      const call = stub.FullDuplexCall(new grpc.Metadata(), deadline());
      call.on('error', () => {});
      const watcher = watch(call);
      for (const [size, body] of [[31415, 27182], [9, 8], [2653, 1828], [58979, 45904]]) {
        const reply = nextMessage(call);
        call.write(duplexRequest(size, body));
        const r = await reply; // the reply before the next request
        if (r === null) break;
        watcher.push(r);
      }
      call.on('data', (r) => watcher.push(r));
      call.end();
      return [await watcher.report()];
    },
    async empty_stream() {
      const call = stub.FullDuplexCall(new grpc.Metadata(), deadline());
      const watcher = readAll(call);
      call.end();
      return [await watcher.report()];
    },
    async timeout_on_sleeping_server() {
      const call = stub.FullDuplexCall(new grpc.Metadata(), deadline(1));
      const watcher = readAll(call);
      call.write(duplexRequest(null, 27182));
      return [await watcher.report()];
    },
    async cancel_after_begin() {
      let watcher;
      const call = stub.StreamingInputCall(new grpc.Metadata(), deadline(), (err, r) => {
        if (!err) watcher.push(r);
      });
      watcher = watch(call);
      call.cancel();
      return [await watcher.report()];
    },
    async cancel_after_first_response() {
      const call = stub.FullDuplexCall(new grpc.Metadata(), deadline());
      call.on('error', () => {});
      const watcher = watch(call);
      const reply = nextMessage(call);
      call.write(duplexRequest(31415, 27182));
      const first = await reply;
      if (first !== null) watcher.push(first);
      call.cancel();
      return [await watcher.report()];
    },
    async custom_metadata() {
      const md = () => {
        const m = new grpc.Metadata();
        m.set('x-grpc-test-echo-initial', 'test_initial_metadata_value');
        m.set('x-grpc-test-echo-trailing-bin', Buffer.from([0xab, 0xab, 0xab]));
        return m;
      };
      const request = { response_size: 314159, payload: zeros(271828) };
      const one = await unary(bind(stub, 'UnaryCall'), request, md());
      const call = stub.FullDuplexCall(md(), deadline());
      const watcher = readAll(call);
      call.write(duplexRequest(314159, 271828));
      call.end();
      return [one, await watcher.report()];
    },
    async status_code_and_message() {
      const status = { code: 2, message: 'test status message' };
      const one = await unary(bind(stub, 'UnaryCall'), { response_status: status });
      const call = stub.FullDuplexCall(new grpc.Metadata(), deadline());
      const watcher = readAll(call);
      call.write({ response_status: status });
      call.end();
      return [one, await watcher.report()];
    },
    async special_status_message() {
      const status = { code: 2, message: SPECIAL_MESSAGE };
      return [await unary(bind(stub, 'UnaryCall'), { response_status: status })];
    },
    async unimplemented_method() {
      return [await unary(bind(stub, 'UnimplementedCall'), {})];
    },
    async unimplemented_service() {
      return [await unary(bind(unimplemented, 'UnimplementedCall'), {})];
    },
  };
}

async function main() {
  const [target, ...names] = process.argv.slice(2);
  const testing = load();
  const creds = grpc.credentials.createInsecure();
  const stub = new testing.TestService(target, creds, OPTIONS);
  // the same channel for both services, as one app's channel to its sidecar would be
  const unimplemented = new testing.UnimplementedService(target, creds, {
    ...OPTIONS,
    channelOverride: stub.getChannel(),
  });
  const run = cases(stub, unimplemented);
  for (const name of names) {
    let line;
    try {
      line = { case: name, calls: await run[name](), error: null };
    } catch (err) {
      line = { case: name, calls: [], error: String(err && err.stack ? err.stack : err) };
    }
    process.stdout.write(JSON.stringify(line) + '\n');
  }
  stub.close();
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
