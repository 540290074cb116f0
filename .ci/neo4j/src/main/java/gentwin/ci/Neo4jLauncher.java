package gentwin.ci;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.connectors.ConnectorPortRegister;
import org.neo4j.configuration.connectors.ConnectorType;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.Result;
import org.neo4j.internal.helpers.HostnamePort;
import org.neo4j.io.ByteUnit;
import org.neo4j.kernel.internal.GraphDatabaseAPI;
import org.neo4j.logging.Level;
import org.neo4j.logging.log4j.Log4jLogProvider;

/**
 * Test-only Neo4j 5 Community server: the embedded DBMS with its Bolt connector.
 *
 * <p>Started by {@code .ci/neo4j/neo4j-server start}; not meant to be run by hand. It
 *
 * <ol>
 *   <li>starts the DBMS in {@code --home} (data, logs) with authentication enabled, Bolt on
 *       {@code --host:--port} (port 0 = any free port, chosen by the OS, so there is no race),
 *       no TLS, no HTTP, a small page cache and no usage reporting;
 *   <li>sets the password of the built-in user {@code neo4j} to the first line of
 *       {@code --password-file} by running {@code ALTER USER} on the system database through the
 *       embedded API (which bypasses Bolt authentication); the password is never logged;
 *   <li>checks {@code RETURN 1} on the default database, then atomically writes
 *       {@code --ready-file}: {"host", "port", "pid", "version", "edition"} as JSON;
 *   <li>runs until SIGTERM/SIGINT, or until the process {@code --watch-pid} has gone (so a
 *       test session killed with SIGKILL does not leave a server behind), then shuts the DBMS
 *       down cleanly and, with {@code --delete-on-exit DIR}, removes DIR (the run directory).
 * </ol>
 *
 * <p>Exit status: 0 after a clean stop, 2 on bad arguments, 1 if the DBMS failed to start.
 */
public final class Neo4jLauncher {

    private Neo4jLauncher() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> opt = parse(args);
        Path home = Path.of(require(opt, "home")).toAbsolutePath();
        Path passwordFile = Path.of(require(opt, "password-file"));
        Path readyFile = Path.of(require(opt, "ready-file"));
        String host = opt.getOrDefault("host", "127.0.0.1");
        int port = Integer.parseInt(opt.getOrDefault("port", "0"));
        long pageCache = ByteUnit.parse(opt.getOrDefault("pagecache", "64m"));
        long watchPid = Long.parseLong(opt.getOrDefault("watch-pid", "0"));
        Path deleteOnExit = opt.containsKey("delete-on-exit") ? Path.of(opt.get("delete-on-exit")) : null;

        String password = Files.readAllLines(passwordFile, StandardCharsets.UTF_8).get(0).strip();
        if (password.length() < 8) {
            die("the password in --password-file must have at least 8 characters");
        }
        Files.createDirectories(home);

        // Registered before the DBMS starts so that a stop (or the watched process going away)
        // during start-up still cleans up. Start-up failures bypass it (halt below) so that the
        // run directory, with the log, survives for `neo4j-server start` to report.
        AtomicReference<DatabaseManagementService> running = new AtomicReference<>();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("[launcher] shutting down");
            try {
                DatabaseManagementService dbms = running.get();
                if (dbms != null) {
                    dbms.shutdown();
                }
            } finally {
                if (deleteOnExit != null) {
                    deleteTree(deleteOnExit);
                }
                stopped.countDown();
            }
        }, "neo4j-launcher-shutdown"));

        if (watchPid > 0) {
            Thread watcher = new Thread(() -> {
                while (ProcessHandle.of(watchPid).map(ProcessHandle::isAlive).orElse(false)) {
                    try {
                        Thread.sleep(1000);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                System.out.println("[launcher] watched process " + watchPid + " has gone");
                System.exit(0);
            }, "neo4j-launcher-watch-pid");
            watcher.setDaemon(true);
            watcher.start();
        }

        try {
            DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                    .setUserLogProvider(new Log4jLogProvider(System.out, Level.INFO))
                    .setConfig(GraphDatabaseSettings.auth_enabled, true)
                    .setConfig(BoltConnector.enabled, true)
                    .setConfig(BoltConnector.listen_address, new SocketAddress(host, port))
                    .setConfig(BoltConnector.advertised_address, new SocketAddress(host, port))
                    .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                    .setConfig(BoltConnector.thread_pool_max_size, 32)
                    .setConfig(GraphDatabaseSettings.pagecache_memory, pageCache)
                    .setConfig(GraphDatabaseSettings.memory_transaction_global_max_size, ByteUnit.mebiBytes(256))
                    .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                    .setConfig(GraphDatabaseSettings.udc_enabled, false)
                    // Internal settings that only shorten shutdown (Bolt's graceful quiet periods,
                    // 5 s + 5 s by default); throwaway test data needs no grace period.
                    .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                    .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(2))
                    .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofSeconds(1))
                    .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofSeconds(1))
                    .build();
            running.set(dbms);
            System.out.println("[launcher] DBMS started at JVM uptime " + uptime());

            GraphDatabaseService system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
            system.executeTransactionally(
                    "ALTER USER neo4j SET PLAINTEXT PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));

            GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
            long one = db.executeTransactionally("RETURN 1 AS one", Map.of(),
                    r -> (Long) r.next().get("one"));
            if (one != 1L) {
                throw new IllegalStateException("RETURN 1 returned " + one);
            }
            String[] component = db.executeTransactionally(
                    "CALL dbms.components() YIELD name, versions, edition RETURN versions[0] AS v, edition AS e",
                    Map.of(), (Result r) -> {
                        Map<String, Object> row = r.next();
                        return new String[] {(String) row.get("v"), (String) row.get("e")};
                    });

            HostnamePort bound = ((GraphDatabaseAPI) db).getDependencyResolver()
                    .resolveDependency(ConnectorPortRegister.class)
                    .getLocalAddress(ConnectorType.BOLT);
            long pid = ProcessHandle.current().pid();
            String json = String.format(
                    "{\"host\": \"%s\", \"port\": %d, \"pid\": %d, \"version\": \"%s\", \"edition\": \"%s\"}%n",
                    bound.getHost(), bound.getPort(), pid, component[0], component[1]);
            Path tmp = readyFile.resolveSibling(readyFile.getFileName() + ".tmp");
            Files.writeString(tmp, json, StandardCharsets.UTF_8);
            Files.move(tmp, readyFile, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            System.out.println("[launcher] Neo4j " + component[0] + " " + component[1]
                    + " ready: bolt://" + bound.getHost() + ":" + bound.getPort() + " (pid " + pid
                    + ") at JVM uptime " + uptime());
        } catch (Throwable failure) {
            System.out.println("[launcher] start-up failed:");
            failure.printStackTrace(System.out);
            System.out.flush();
            Runtime.getRuntime().halt(1);
        }
        stopped.await();
    }

    private static String uptime() {
        return String.format("%.1f s", ManagementFactory.getRuntimeMXBean().getUptime() / 1000.0);
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> opt = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("--")) {
                die("unexpected argument: " + args[i]);
            }
            String key = args[i].substring(2);
            if (i + 1 < args.length) {
                opt.put(key, args[++i]);
            } else {
                die("option --" + key + " needs a value");
            }
        }
        return opt;
    }

    private static String require(Map<String, String> opt, String key) {
        String value = opt.get(key);
        if (value == null) {
            die("missing option --" + key);
        }
        return value;
    }

    private static void deleteTree(Path root) {
        if (!Files.exists(root)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            System.out.println("[launcher] could not remove " + root + ": " + e);
        }
    }

    private static void die(String message) {
        System.err.println("[launcher] " + message);
        System.exit(2);
    }
}
