// Drives the reference server's Node client (js-client/ of the lockserver 0.1.3 crate,
// unmodified, with axios from npm) against the server at LOCKSERVER_ADDR, and prints what it
// saw, one `name=value` per line.
const { LockserverClient } = require(process.env.LOCKSERVER_JS_CLIENT);

const addr = process.env.LOCKSERVER_ADDR;
const secret = process.env.LOCKSERVER_SECRET;
const res = `js-${process.pid}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const a = new LockserverClient({ addr, owner: 'js-a', secret });
  const b = new LockserverClient({ addr, owner: 'js-b', secret });
  const seen = {};

  seen.acquire_free = await a.acquire(res, false);
  seen.nonblocking_held = await b.acquire(res, false);

  const releaser = sleep(500).then(() => a.release(res));
  const start = Date.now();
  seen.blocking_after_release = await b.acquire(res);
  seen.blocking_waited = Date.now() - start >= 400;
  await releaser;

  try {
    await a.release(res);
    seen.release_by_non_holder = 'no error';
  } catch (e) {
    seen.release_by_non_holder = e.response ? e.response.status : String(e);
  }
  await b.release(res);

  seen.expire_acquire = await a.acquire(`${res}-ttl`, false, 1);
  seen.expire_held = await b.acquire(`${res}-ttl`, false);
  await sleep(1300);
  seen.expire_freed = await b.acquire(`${res}-ttl`, false);

  try {
    await new LockserverClient({ addr, owner: 'js-x', secret: 'wrong' }).acquire(`${res}-x`, false);
    seen.wrong_secret = 'no error';
  } catch (e) {
    seen.wrong_secret = e.response ? e.response.status : String(e);
  }

  // Configured from the environment only, as the SDK documents.
  const env = new LockserverClient({});
  seen.env_client = env.owner === process.env.LOCKSERVER_OWNER && (await env.acquire(`${res}-env`, false));

  for (const [name, value] of Object.entries(seen)) {
    console.log(`${name}=${value}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
