"""asyncpg through pgsplit (run by tests/drivers.rs): SCRAM login, prepared statements, a
transaction on the primary, a read on a replica, COPY, LISTEN/NOTIFY and a cancel.

Environment: PGSPLIT_PORT, PRIMARY_PORT, REPLICA_PORTS (comma-separated), TABLE (a table
`(v int)` that exists), CHANNEL (a LISTEN channel of its own). Prints one line per check; exits non-zero at the first failure.
"""
import asyncio
import os
import sys
import time

import asyncpg

PORT = int(os.environ["PGSPLIT_PORT"])
PRIMARY = int(os.environ["PRIMARY_PORT"])
REPLICAS = {int(p) for p in os.environ["REPLICA_PORTS"].split(",")}
TABLE = os.environ["TABLE"]
CHANNEL = os.environ["CHANNEL"]


async def connect():
    return await asyncpg.connect(host="127.0.0.1", port=PORT, user="app", password="secret",
                                 database="app", ssl=False)


async def main():
    conn = await connect()
    print("scram login: ok")

    stmt = await conn.prepare("select $1::int + 1")
    assert [await stmt.fetchval(41) for _ in range(3)] == [42] * 3
    print("prepared statement: ok")

    async with conn.transaction():
        port = await conn.fetchval(
            f"insert into {TABLE} (v) values ($1) returning inet_server_port()", 1)
    assert port == PRIMARY, f"the write ran on {port}, not the primary {PRIMARY}"
    print("transaction on the primary: ok")

    reader = await connect()
    # asyncpg prepares a new statement with Parse, Describe and Flush, then waits for the
    # description before it sends Bind, Execute and Sync. pgsplit routes a batch as a whole
    # and cannot know the rest of one not yet ended by Sync, so that first execution runs on
    # the primary (docs/compatibility.md); the statement's later executions are routed.
    first = await reader.fetchval("select inet_server_port()")
    assert first == PRIMARY, f"the first execution ran on {first}: update the comment above"
    port = await reader.fetchval("select inet_server_port()")
    assert port in REPLICAS, f"the read ran on {port}, not a replica {REPLICAS}"
    print("read on a replica: ok")

    n = await conn.copy_records_to_table(TABLE, records=[(i,) for i in range(100)], columns=["v"])
    assert n.startswith("COPY 100"), n
    print("copy: ok")

    got = asyncio.get_running_loop().create_future()
    await conn.add_listener(CHANNEL, lambda *args: got.done() or got.set_result(args[3]))
    await reader.execute(f"notify {CHANNEL}, 'hello'")
    assert await asyncio.wait_for(got, 10) == "hello"
    print("listen/notify: ok")

    started = time.monotonic()
    try:
        await asyncio.wait_for(reader.execute("select pg_sleep(30)"), 0.5)
        raise AssertionError("pg_sleep(30) was not cancelled")
    except asyncio.TimeoutError:
        pass
    assert await reader.fetchval("select 1") == 1
    assert time.monotonic() - started < 10, "the cancel took too long"
    print("cancel: ok")

    await conn.close()
    await reader.close()


try:
    asyncio.run(main())
except Exception as e:  # noqa: BLE001 - any failure fails the check
    print(f"FAILED: {type(e).__name__}: {e}")
    sys.exit(1)
