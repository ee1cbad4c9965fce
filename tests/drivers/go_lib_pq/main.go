// lib/pq (Debian's golang-github-lib-pq-dev, built in GOPATH mode) through pgsplit, run by
// tests/drivers.rs: SCRAM login, prepared statements, a transaction on the primary, a read
// on a replica, COPY, LISTEN/NOTIFY and a cancel (a context deadline, which lib/pq sends as
// a CancelRequest).
//
// Environment: PGSPLIT_PORT, PRIMARY_PORT, REPLICA_PORTS (comma-separated), TABLE (a table
// `(v int)` that exists), CHANNEL (a LISTEN channel of its own). Prints one line per check; exits non-zero at the first failure.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

func fail(format string, args ...interface{}) {
	fmt.Printf("FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func main() {
	dsn := fmt.Sprintf("host=127.0.0.1 port=%s user=app password=secret dbname=app sslmode=disable",
		os.Getenv("PGSPLIT_PORT"))
	primary, _ := strconv.Atoi(os.Getenv("PRIMARY_PORT"))
	replicas := map[int]bool{}
	for _, p := range strings.Split(os.Getenv("REPLICA_PORTS"), ",") {
		n, _ := strconv.Atoi(p)
		replicas[n] = true
	}
	table := os.Getenv("TABLE")
	channel := os.Getenv("CHANNEL")
	ctx := context.Background()

	db, err := sql.Open("postgres", dsn)
	check(err, "open")
	conn, err := db.Conn(ctx)
	check(err, "connect")
	check(conn.PingContext(ctx), "ping")
	fmt.Println("scram login: ok")

	stmt, err := conn.PrepareContext(ctx, "select $1::int + 1")
	check(err, "prepare")
	for i := 0; i < 3; i++ {
		var n int
		check(stmt.QueryRowContext(ctx, 41).Scan(&n), "prepared statement")
		if n != 42 {
			fail("prepared statement gave %d", n)
		}
	}
	check(stmt.Close(), "close statement")
	fmt.Println("prepared statement: ok")

	tx, err := conn.BeginTx(ctx, nil)
	check(err, "begin")
	var port int
	check(tx.QueryRowContext(ctx, "insert into "+table+" (v) values ($1) returning inet_server_port()", 1).Scan(&port), "insert")
	check(tx.Commit(), "commit")
	if port != primary {
		fail("the write ran on %d, not the primary %d", port, primary)
	}
	fmt.Println("transaction on the primary: ok")

	reader, err := db.Conn(ctx)
	check(err, "second connection")
	check(reader.QueryRowContext(ctx, "select inet_server_port()").Scan(&port), "read")
	if !replicas[port] {
		fail("the read ran on %d, not a replica", port)
	}
	fmt.Println("read on a replica: ok")

	tx, err = conn.BeginTx(ctx, nil)
	check(err, "begin copy")
	copyIn, err := tx.PrepareContext(ctx, pq.CopyIn(table, "v"))
	check(err, "copy in")
	for i := 0; i < 100; i++ {
		_, err = copyIn.ExecContext(ctx, i)
		check(err, "copy row")
	}
	_, err = copyIn.ExecContext(ctx)
	check(err, "copy end")
	check(copyIn.Close(), "copy close")
	check(tx.Commit(), "copy commit")
	fmt.Println("copy: ok")

	listener := pq.NewListener(dsn, time.Second, time.Second, nil)
	check(listener.Listen(channel), "listen")
	_, err = reader.ExecContext(ctx, "notify "+channel+", 'hello'")
	check(err, "notify")
	select {
	case n := <-listener.Notify:
		if n == nil || n.Extra != "hello" {
			fail("notification %v", n)
		}
	case <-time.After(10 * time.Second):
		fail("no notification in 10 s")
	}
	check(listener.Close(), "unlisten")
	fmt.Println("listen/notify: ok")

	started := time.Now()
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = reader.ExecContext(short, "select pg_sleep(30)")
	cancel()
	if err == nil {
		fail("pg_sleep(30) was not cancelled")
	}
	if pqErr, ok := err.(*pq.Error); !ok || pqErr.Code != "57014" {
		fail("cancel: %v", err)
	}
	// lib/pq marks a connection whose context ended as bad, also straight against
	// PostgreSQL: database/sql then replaces it, as here.
	var one int
	check(db.QueryRowContext(ctx, "select 1").Scan(&one), "after the cancel")
	if time.Since(started) > 10*time.Second {
		fail("the cancel took too long")
	}
	fmt.Println("cancel: ok")

	check(conn.Close(), "close")
	_ = reader.Close()
}
