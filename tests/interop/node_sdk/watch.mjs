// The official FeatureHub Node SDK against an Edge: prints one JSON line each time what the
// repository holds changes ({"readyness", "features": {key: {version, value}}}), for
// tests/interop/test_official_clients.py. Usage: node watch.mjs EDGE_URL API_KEY sse|poll
import pkg from 'featurehub-javascript-node-sdk';

const { EdgeFeatureHubConfig, FeatureHubPollingClient } = pkg;
const [, , url, apiKey, mode] = process.argv;
const config = EdgeFeatureHubConfig.config(url, apiKey);
if (mode === 'poll') {
  config.edgeServiceProvider((repo, cfg) => new FeatureHubPollingClient(repo, cfg, 200));
}
const repo = config.repository();
config.init();
let last = '';
setInterval(() => {
  const features = {};
  for (const key of repo.simpleFeatures().keys()) {
    const holder = repo.feature(key);
    features[key] = { version: holder.version, value: holder.value ?? null };
  }
  const line = JSON.stringify({ readyness: String(repo.readyness), features });
  if (line !== last) {
    last = line;
    console.log(line);
  }
}, 50);
setTimeout(() => process.exit(0), 120000);  // bounded: the test stops it long before
