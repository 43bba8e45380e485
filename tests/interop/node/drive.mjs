// Drives the real featurehub-store-redis (1.0.0) for tests/interop/test_node_redis_store.py.
//
// featurehub-store-redis 1.0.0 declares featurehub-javascript-core-sdk ^2.0.0, which the
// npm registry does not serve (404). The store imports only fhLog and SSEResultState from
// it, which the 1.x featurehub-javascript-client-sdk also exports, so package.json installs
// the 1.x client SDK under the core SDK's name (an npm alias) and an npm "overrides" entry
// points the store's dependency at that alias.
//
// The 1.x SDK's config has no environmentId and its repository no raw-update listeners (the
// 2.x API the store calls), so the store gets a small config around a real 1.x
// ClientFeatureRepository: environmentId, getApiKeys, clientEvaluated, and a repository
// that also accepts registerRawUpdateFeatureListener. Everything the store does to Redis is
// its own code.
//
// Usage: node drive.mjs MODE URL PREFIX ENVIRONMENT [ARG]
//   read                  print {key: {version, value}} the store loaded from Redis
//   sha                   print the store's fingerprint of the stored array and the _sha key
//   write FEATURES_JSON   load, then hand the store a full feature list (Edge's "features")
//   update FEATURE_JSON   load, then hand the store one feature (Edge's "feature")
//   storm COUNT [PAUSE]   single-feature updates JS0000.., one after another with PAUSE
//                         ms between (5), until {prefix}_stop exists (and at least COUNT);
//                         prints how many
import { RedisSessionStoreUrl } from "featurehub-store-redis";
import { ClientFeatureRepository } from "featurehub-javascript-core-sdk";

const [mode, url, prefix, environmentId, arg] = process.argv.slice(2);

const repository = new ClientFeatureRepository();
const listeners = [];
repository.registerRawUpdateFeatureListener = (l) => listeners.push(l);
const config = {
  environmentId,
  getApiKeys: () => [`portfolio/${environmentId}/client*secret`],
  clientEvaluated: () => true,
  repository: () => repository,
};

const store = new RedisSessionStoreUrl(url, config, { prefix, delayInit: true, refreshTimeout: 3600 });
await store.init();

if (mode === "read") {
  const raw = await store._client.get(`${prefix}_${environmentId}`);
  const keys = raw ? JSON.parse(raw).map((f) => f.key) : [];
  const out = {};
  for (const key of keys) {
    const h = repository.feature(key);
    out[key] = { version: h.getVersion(), value: h.getBoolean() };
  }
  process.stdout.write(JSON.stringify(out));
} else if (mode === "sha") {
  // the store's own fingerprint of what Redis holds, next to the _sha key it holds
  const raw = await store._client.get(`${prefix}_${environmentId}`);
  const stored = await store._client.get(`${prefix}_${environmentId}_sha`);
  process.stdout.write(JSON.stringify({ computed: store._computeSha(JSON.parse(raw)), stored }));
} else if (mode === "update") {
  // one feature, as a stream's single-feature event: the store merges it into what Redis holds
  await store._handleProcessUpdate(JSON.parse(arg));
  process.stdout.write("ok");
} else if (mode === "write") {
  const features = JSON.parse(arg);
  // processUpdates is fire-and-forget; await the handler it calls, so the write is done
  await store._handleProcessUpdates(features);
  process.stdout.write("ok");
} else if (mode === "storm") {
  // one update after another, JS0000, JS0001...: at least COUNT, and on until the key
  // {prefix}_stop exists (the test sets it once its own storm is over); prints how many
  const count = Number(arg);
  const pauseMs = Number(process.argv[7] ?? "5");
  let i = 0;
  while (i < count || !(await store._client.exists(`${prefix}_stop`))) {
    const key = `JS${String(i).padStart(4, "0")}`;
    await store._handleProcessUpdate({ id: `id-${key}`, key, l: false, version: 1, type: "BOOLEAN", value: true, strategies: [] });
    i++;
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  process.stdout.write(String(i));
} else {
  throw new Error(`unknown mode ${mode}`);
}
store.close();
await store._client.quit();
