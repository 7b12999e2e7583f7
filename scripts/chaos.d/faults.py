"""The processes the chaos run owns and the faults it injects into them, plus the side listeners:
a revocation prober (how long a revocation takes to be refused on the other instance), a webhook
receiver and the RSS sampler."""

import http.server
import json
import os
import signal
import subprocess
import threading
import time

from wire import redis_ping

# The relay's advisory lock (src/revocation/relay.rs RELAY_LOCK = 0x0074_6573_7372_6c79), as
# pg_locks shows a bigint key: high 32 bits in classid, low 32 bits in objid.
RELAY_LOCK_CLASSID = 0x00746573
RELAY_LOCK_OBJID = 0x73726C79


class Services:
    def __init__(self, cfg, load, sql):
        self.cfg = cfg
        self.load = load
        self.sql = sql
        self.children = []

    # -- Redis --------------------------------------------------------------------------------

    def redis_pid(self):
        with open(self.cfg["redis"]["pidfile"]) as f:
            return int(f.read().strip())

    def redis_signal(self, sig):
        os.kill(self.redis_pid(), sig)

    def redis_kill(self):
        pid = self.redis_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def redis_start(self):
        subprocess.run(self.cfg["redis"]["argv"], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not redis_ping(self.cfg["redis"]["port"]):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 15 s of starting")
            time.sleep(0.05)

    # -- Postgres -----------------------------------------------------------------------------

    def pg_ctl(self, *args):
        pg = self.cfg["pg"]
        cmd = [os.path.join(pg["bindir"], "pg_ctl"), "-D", pg["data"], *args]
        if pg["owner"]:
            cmd = ["runuser", "-u", pg["owner"], "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def pg_stop(self):
        self.pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def pg_start(self):
        self.pg_ctl("start", "-w", "-t", "60", "-l", self.cfg["pg"]["log"])

    # -- Tessera instances --------------------------------------------------------------------

    def kill_instance(self, inst):
        inst.alive = False
        os.kill(inst.pid, signal.SIGKILL)

    def restart_instance(self, inst, within=120):
        env = dict(os.environ)
        env.update(inst.env)
        log = open(inst.log, "ab")
        proc = subprocess.Popen([inst.bin, "serve"], env=env, stdout=log, stderr=log, cwd=self.cfg["work"])
        self.children.append(proc)
        with open(self.cfg["extra_pids"], "a") as f:
            f.write(f"{proc.pid}\n")
        inst.pid = proc.pid
        inst.proc = proc
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{inst.name} exited with {proc.returncode} after its restart; see {inst.log}")
            a = self.load.http.call(inst, "readyz", "GET", "/readyz", record=False)
            if a.status == 200:
                inst.alive = True
                return
            time.sleep(0.1)
        raise RuntimeError(f"{inst.name} was not ready within {within} s of its restart")

    def hold_relay(self, within=30.0, hold=3.0):
        """Makes the relay stall while it holds its lock (a transaction of ours holds row locks on
        events the relay must number), and returns (the name of the instance holding the lock, the
        psql process keeping it stalled for `hold` more seconds) — or (None, None)."""
        sql = f"""
DO $$
DECLARE holder text; t0 timestamptz := clock_timestamp();
BEGIN
  LOOP
    IF clock_timestamp() - t0 > interval '{within} s' THEN RAISE NOTICE 'chaos-holder:'; RETURN; END IF;
    PERFORM 1 FROM revocation_events WHERE seq IS NULL FOR UPDATE SKIP LOCKED;
    PERFORM pg_stat_clear_snapshot();
    SELECT a.application_name INTO holder FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {RELAY_LOCK_CLASSID}
       AND l.objid = {RELAY_LOCK_OBJID} AND a.wait_event_type = 'Lock'
     LIMIT 1;
    IF holder IS NOT NULL THEN
      RAISE NOTICE 'chaos-holder:%', holder;
      PERFORM pg_sleep({hold});
      RETURN;
    END IF;
    PERFORM pg_sleep(0.002);
  END LOOP;
END $$;"""
        p = subprocess.Popen(["psql", "-X", "-w", "-q", self.sql.url, "-c", sql], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        for line in p.stderr:
            if "chaos-holder:" in line:
                name = line.split("chaos-holder:", 1)[1].strip()
                if name:
                    return name, p
                break
        p.wait()
        return None, None

    def close(self):
        for p in self.children:
            if p.poll() is None:
                p.terminate()
        for p in self.children:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


class Prober(threading.Thread):
    """Every couple of seconds: a key made and cached on one instance, revoked on the other, and
    the time until the first one refuses it."""

    def __init__(self, load):
        super().__init__(daemon=True)
        self.load = load
        self.results = []  # (revoked at, seconds until refused or None, revoked on, checked on)
        self.flip = False

    def run(self):
        load = self.load
        while not load.stopping:
            time.sleep(1.5)
            load.go.wait()
            live = load.alive()
            if len(live) < 2:
                continue
            self.flip = not self.flip
            a, b = (live[0], live[1]) if self.flip else (live[1], live[0])
            try:
                self.probe(a, b)
            except Exception as e:  # a driver bug must not look like a quiet service
                load.fail(f"driver error in the prober: {e!r}")

    def verify(self, inst, key):
        ans = self.load.http.call(inst, "probe_verify", "POST", "/v1/keys/verify", json_body={"key": key},
                                  bearer=self.load.token())
        return ans.json() if ans.ok else None

    def probe(self, a, b):
        load = self.load
        k = load.new_key(a)
        if k is None:
            return
        deadline = time.monotonic() + 3
        while True:
            j = self.verify(b, k[1])
            if j and j.get("valid"):
                break
            if time.monotonic() > deadline or not b.alive:
                return
            time.sleep(0.05)
        r = load.http.call(a, "probe_revoke", "POST", f"/v1/keys/{k[0]}/revoke", bearer=load.token(),
                           json_body={"reason": "chaos probe"})
        if not r.ok:
            return
        t0 = time.monotonic()
        load.revoked("api_key", {"id": k[0], "key": k[1]})
        load.owe("api_key.revoked", {k[0]})
        while time.monotonic() - t0 < 15:
            if not b.alive:
                return
            j = self.verify(b, k[1])
            if j and j.get("valid") is False and j.get("code") == "REVOKED":
                self.results.append((t0, time.monotonic() - t0, a.name, b.name))
                return
            time.sleep(0.02)
        self.results.append((t0, None, a.name, b.name))


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records (type, key id) of everything delivered."""

    def __init__(self):
        got = self.got = set()
        lock = self.lock = threading.Lock()
        self.deliveries = 0

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                try:
                    j = json.loads(body)
                    key = ((j.get("type"), (j.get("data") or {}).get("key_id")))
                except (ValueError, AttributeError):
                    key = None
                with lock:
                    outer.deliveries += 1
                    if key:
                        got.add(key)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self):
        with self.lock:
            return set(self.got)


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None
