// PostgreSQL JDBC (Debian's libpostgresql-jdbc-java) through pgsplit (run by
// tests/drivers.rs with `java -cp postgresql.jar JdbcCheck.java`): SCRAM login, server-side
// prepared statements, a transaction on the primary, a read on a replica, COPY,
// LISTEN/NOTIFY and a cancel (a query timeout, which the driver sends as a CancelRequest).
//
// Environment: PGSPLIT_PORT, PRIMARY_PORT, REPLICA_PORTS (comma-separated), TABLE (a table
// `(v int)` that exists), CHANNEL (a LISTEN channel of its own). Prints one line per check; exits non-zero at the first failure.
import java.io.StringReader;
import java.sql.*;
import java.util.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;

public class JdbcCheck {
    static final String PORT = System.getenv("PGSPLIT_PORT");
    static final int PRIMARY = Integer.parseInt(System.getenv("PRIMARY_PORT"));
    static final Set<Integer> REPLICAS = new HashSet<>();
    static final String TABLE = System.getenv("TABLE");
    static final String CHANNEL = System.getenv("CHANNEL");

    static Connection connect() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "app");
        p.setProperty("password", "secret");
        p.setProperty("sslmode", "disable");
        // Server-side prepared statements from the first execution on.
        p.setProperty("prepareThreshold", "1");
        return DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + PORT + "/app", p);
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static int port(Statement s, String sql) throws SQLException {
        try (ResultSet r = s.executeQuery(sql)) {
            r.next();
            return r.getInt(1);
        }
    }

    public static void main(String[] args) {
        try {
            for (String p : System.getenv("REPLICA_PORTS").split(",")) REPLICAS.add(Integer.parseInt(p));
            run();
        } catch (Throwable e) {
            System.out.println("FAILED: " + e);
            e.printStackTrace(System.out);
            System.exit(1);
        }
    }

    static void run() throws Exception {
        Connection conn = connect();
        System.out.println("scram login: ok");

        try (PreparedStatement ps = conn.prepareStatement("select ?::int + 1")) {
            for (int i = 0; i < 3; i++) {
                ps.setInt(1, 41);
                try (ResultSet r = ps.executeQuery()) {
                    r.next();
                    check(r.getInt(1) == 42, "prepared statement result");
                }
            }
        }
        System.out.println("prepared statement: ok");

        conn.setAutoCommit(false);
        try (Statement s = conn.createStatement()) {
            int p = port(s, "insert into " + TABLE + " (v) values (1) returning inet_server_port()");
            conn.commit();
            check(p == PRIMARY, "the write ran on " + p);
        }
        conn.setAutoCommit(true);
        System.out.println("transaction on the primary: ok");

        Connection reader = connect();
        try (Statement s = reader.createStatement()) {
            int p = port(s, "select inet_server_port()");
            check(REPLICAS.contains(p), "the read ran on " + p);
        }
        System.out.println("read on a replica: ok");

        StringBuilder rows = new StringBuilder();
        for (int i = 0; i < 100; i++) rows.append(i).append('\n');
        long copied = conn.unwrap(PGConnection.class).getCopyAPI()
            .copyIn("copy " + TABLE + " (v) from stdin", new StringReader(rows.toString()));
        check(copied == 100, "copied " + copied);
        System.out.println("copy: ok");

        try (Statement s = conn.createStatement()) {
            s.execute("listen " + CHANNEL);
        }
        try (Statement s = reader.createStatement()) {
            s.execute("notify " + CHANNEL + ", 'hello'");
        }
        PGNotification[] got = conn.unwrap(PGConnection.class).getNotifications(10000);
        check(got != null && got.length == 1 && got[0].getParameter().equals("hello"), "no notification");
        System.out.println("listen/notify: ok");

        long started = System.nanoTime();
        try (Statement s = reader.createStatement()) {
            s.setQueryTimeout(1);
            try {
                s.execute("select pg_sleep(30)");
                throw new AssertionError("pg_sleep(30) was not cancelled");
            } catch (SQLException e) {
                check("57014".equals(e.getSQLState()), "cancel: " + e.getSQLState() + " " + e.getMessage());
            }
        }
        try (Statement s = reader.createStatement()) {
            check(port(s, "select 1") == 1, "reader usable after the cancel");
        }
        check((System.nanoTime() - started) / 1_000_000_000L < 10, "the cancel took too long");
        System.out.println("cancel: ok");

        conn.close();
        reader.close();
    }
}
