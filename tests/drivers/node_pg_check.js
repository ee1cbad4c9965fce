// node-postgres (`pg`, with `pg-copy-streams`) through pgsplit (run by tests/drivers.rs):
// SCRAM login, prepared statements, a transaction on the primary, a read on a replica,
// COPY, LISTEN/NOTIFY and a cancel.
//
// Environment: PGSPLIT_PORT, PRIMARY_PORT, REPLICA_PORTS (comma-separated), TABLE (a table
// `(v int)` that exists), CHANNEL (a LISTEN channel of its own), NODE_PATH (where `pg` is installed). Prints one line per check;
// exits non-zero at the first failure.
const assert = require('assert')
const { pipeline } = require('stream/promises')
const { Readable } = require('stream')
const pg = require('pg')
const copyFrom = require('pg-copy-streams').from

const port = Number(process.env.PGSPLIT_PORT)
const primary = Number(process.env.PRIMARY_PORT)
const replicas = process.env.REPLICA_PORTS.split(',').map(Number)
const table = process.env.TABLE
const channel = process.env.CHANNEL
const config = { host: '127.0.0.1', port, user: 'app', password: 'secret', database: 'app' }

async function connect () {
  const c = new pg.Client(config)
  await c.connect()
  return c
}

async function main () {
  const conn = await connect()
  console.log('scram login: ok')

  for (let i = 0; i < 3; i++) {
    const r = await conn.query({ name: 'plus_one', text: 'select $1::int + 1 as n', values: [41] })
    assert.strictEqual(r.rows[0].n, 42)
  }
  console.log('prepared statement: ok')

  await conn.query('begin')
  const w = await conn.query(`insert into ${table} (v) values ($1) returning inet_server_port() as p`, [1])
  await conn.query('commit')
  assert.strictEqual(w.rows[0].p, primary, `the write ran on ${w.rows[0].p}`)
  console.log('transaction on the primary: ok')

  const reader = await connect()
  const r = await reader.query('select inet_server_port() as p')
  assert.ok(replicas.includes(r.rows[0].p), `the read ran on ${r.rows[0].p}`)
  console.log('read on a replica: ok')

  const rows = Array.from({ length: 100 }, (_, i) => `${i}\n`)
  await pipeline(Readable.from(rows), conn.query(copyFrom(`copy ${table} (v) from stdin`)))
  console.log('copy: ok')

  const got = new Promise((resolve) => conn.on('notification', (m) => resolve(m.payload)))
  await conn.query(`listen ${channel}`)
  await reader.query(`notify ${channel}, 'hello'`)
  const payload = await Promise.race([got, new Promise((_, reject) => setTimeout(() => reject(new Error('no notification in 10 s')), 10000))])
  assert.strictEqual(payload, 'hello')
  console.log('listen/notify: ok')

  const started = Date.now()
  const sleeping = reader.query('select pg_sleep(30)')
  await new Promise((resolve) => setTimeout(resolve, 500))
  new pg.Client(config).cancel(reader, reader.activeQuery)
  await assert.rejects(sleeping, (e) => e.code === '57014')
  const after = await reader.query('select 1 as one')
  assert.strictEqual(after.rows[0].one, 1)
  assert.ok(Date.now() - started < 10000, 'the cancel took too long')
  console.log('cancel: ok')

  await conn.end()
  await reader.end()
}

main().catch((e) => {
  console.log(`FAILED: ${e.stack || e}`)
  process.exit(1)
})
