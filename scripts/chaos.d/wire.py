"""What the chaos driver talks through: HTTP to the instances, Redis (RESP, by hand), psql.

Standard library only, so a fresh clone needs nothing from PyPI to run scripts/chaos.
"""

import base64
import http.client
import json
import socket
import subprocess
import threading
import time
import urllib.parse


class Answer:
    """One HTTP exchange as the load sees it: a status (int), or "conn" (refused, reset, closed
    before an answer) or "timeout" (no answer within the client's deadline)."""

    __slots__ = ("status", "body", "headers", "started", "ended")

    def __init__(self, status, body, headers, started, ended):
        self.status = status
        self.body = body
        self.headers = headers
        self.started = started
        self.ended = ended

    @property
    def ok(self):
        return isinstance(self.status, int) and 200 <= self.status < 300

    @property
    def ambiguous(self):
        """No answer, or one that does not say what happened (the change may have committed)."""
        return not isinstance(self.status, int) or self.status >= 500

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


class Recorder:
    """Every request made, as (started, ended, instance, operation, status, latency)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = []

    def add(self, inst, op, ans):
        with self.lock:
            self.rows.append((ans.started, ans.ended, inst, op, ans.status))

    def between(self, t0, t1):
        with self.lock:
            return [r for r in self.rows if t0 <= r[0] < t1]


def basic(client_id, secret):
    raw = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


class Http:
    """Keep-alive connections per thread and instance; every call is recorded."""

    def __init__(self, recorder, timeout):
        self.recorder = recorder
        self.timeout = timeout
        self.local = threading.local()

    def _conn(self, inst):
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        # Keyed by the process too: a connection kept alive to a killed process is not reused
        # with the process started in its place.
        c = conns.get((inst.url, inst.pid))
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=self.timeout)
            conns[(inst.url, inst.pid)] = c
        return c

    def _drop(self, inst):
        c = self.local.conns.pop((inst.url, inst.pid), None)
        if c is not None:
            c.close()

    def call(self, inst, op, method, path, *, json_body=None, form=None, bearer=None, auth=None, record=True):
        headers = {}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if bearer:
            headers["Authorization"] = "Bearer " + bearer
        elif auth:
            headers["Authorization"] = auth
        started = time.monotonic()
        for attempt in (1, 2):
            reused = (inst.url, inst.pid) in getattr(self.local, "conns", {})
            try:
                c = self._conn(inst)
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                ans = Answer(r.status, data, dict(r.getheaders()), started, time.monotonic())
                if r.getheader("Connection", "").lower() == "close":
                    self._drop(inst)
            except socket.timeout:
                self._drop(inst)
                ans = Answer("timeout", b"", {}, started, time.monotonic())
            except (OSError, http.client.HTTPException):
                self._drop(inst)
                ans = Answer("conn", b"", {}, started, time.monotonic())
                # A kept-alive connection the server had closed while idle: what every HTTP
                # client does, once, on a new connection (a dead process refuses that one too).
                if reused and attempt == 1:
                    continue
            break
        if record:
            self.recorder.add(inst.name, op, ans)
        return ans


# ---------------------------------------------------------------------------------------------
# Redis, by hand: enough RESP2 for SUBSCRIBE, XRANGE and PING.


class Resp:
    def __init__(self, port, timeout=2.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def send(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        self.sock.sendall(b"".join(out))

    def read(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected RESP line {line!r}")

    def command(self, *args):
        self.send(*args)
        return self.read()


def redis_ping(port):
    try:
        r = Resp(port, timeout=1.0)
        try:
            return r.command("PING") == "PONG"
        finally:
            r.close()
    except (OSError, RuntimeError, ConnectionError):
        return False


class Subscriber(threading.Thread):
    """Listens on the revocation channel the way a resource service would, and reads the stream
    after every (re)subscription so that what was published while it was away is not missed.
    Records every `seq` in arrival order, order violations, and repeats among the live messages
    (a relay that dies between publishing and marking publishes again: at least once)."""

    def __init__(self, port, prefix):
        super().__init__(daemon=True)
        self.port = port
        self.channel = f"{prefix}:revocations"
        self.stream = f"{prefix}:revocations:stream"
        self.lock = threading.Lock()
        self.seen = set()
        self.highest = 0
        self.duplicates = 0
        self.out_of_order = []
        self.reconnects = 0
        self.stopping = False

    def _note(self, seq, live):
        with self.lock:
            if seq in self.seen:
                self.duplicates += 1 if live else 0
                return
            if seq < self.highest:
                self.out_of_order.append((seq, self.highest))
            self.seen.add(seq)
            self.highest = max(self.highest, seq)

    def _payload(self, raw):
        try:
            return int(json.loads(raw)["seq"])
        except (ValueError, KeyError, TypeError):
            return None

    def run(self):
        first = True
        while not self.stopping:
            sub = None
            try:
                sub = Resp(self.port, timeout=1.0)
                sub.command("SUBSCRIBE", self.channel)
                # Subscribed: now read what the stream holds, so nothing published before this
                # moment and after the last connection is missed (duplicates are counted, not lost).
                reader = Resp(self.port, timeout=2.0)
                try:
                    entries = reader.command("XRANGE", self.stream, "-", "+") or []
                finally:
                    reader.close()
                for _id, fields in entries:
                    d = dict(zip(fields[::2], fields[1::2]))
                    seq = self._payload(d.get(b"event", b""))
                    if seq is not None:
                        self._note(seq, False)
                if not first:
                    self.reconnects += 1
                first = False
                # Block on the subscription: a paused Redis is waited for, a dead one resets it.
                sub.sock.settimeout(None)
                while not self.stopping:
                    msg = sub.read()
                    if isinstance(msg, list) and msg and msg[0] == b"message":
                        seq = self._payload(msg[2])
                        if seq is not None:
                            self._note(seq, True)
            except (OSError, RuntimeError, ConnectionError):
                time.sleep(0.2)
            finally:
                if sub is not None:
                    sub.close()

    def snapshot(self):
        with self.lock:
            return set(self.seen), self.duplicates, list(self.out_of_order)


# ---------------------------------------------------------------------------------------------
# Postgres through psql (installed by the scripts library).


class Sql:
    def __init__(self, url):
        self.url = url

    def rows(self, sql, timeout=15):
        """Rows as lists of strings; raises RuntimeError when psql fails."""
        p = subprocess.run(
            ["psql", "-X", "-w", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", self.url, "-c", sql],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if p.returncode != 0:
            raise RuntimeError(p.stderr.strip())
        return [line.split("\t") for line in p.stdout.splitlines() if line != ""]

    def value(self, sql):
        r = self.rows(sql)
        return r[0][0] if r else None

    def answers(self):
        try:
            return self.value("SELECT 1") == "1"
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
