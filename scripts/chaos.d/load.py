"""The steady mixed load, and the record of what it did that the checks hold the service to:
every revocation answered 200, every credit admitted, every webhook event owed."""

import collections
import random
import threading
import time
import uuid

from wire import basic

# Operation weights: mostly reads (tokens, verifications, refresh rotations), a steady trickle of
# revocations and key changes.
WEIGHTS = {
    "cc_token": 18,
    "refresh": 16,
    "verify": 30,
    "verify_credit": 14,
    "revoke_token": 5,
    "revoke_key": 3,
    "disable_key": 2,
    "rotate_key": 2,
    "patch_key": 3,
    "revoke_family": 1,
}
INITIAL_CREDITS = 100_000_000
LIVE_KEYS = 16


class Revocation:
    """A committed revocation or narrowing (answered 200) and the credential it must stop."""

    __slots__ = ("kind", "cred", "at")

    def __init__(self, kind, cred, at):
        self.kind = kind
        self.cred = cred
        self.at = at


class Instance:
    def __init__(self, d):
        self.name = d["name"]
        self.port = d["port"]
        self.url = d["url"]
        self.pid = d["pid"]
        self.log = d["log"]
        self.bin = d["bin"]
        self.env = d["env"]
        self.alive = True
        self.proc = None


class Load:
    def __init__(self, http, instances, admin_secret, workers):
        self.http = http
        self.instances = instances
        self.admin_auth = basic("admin", admin_secret)
        self.workers = workers
        self.lock = threading.Lock()
        self.go = threading.Event()
        self.stopping = False
        self.inflight = 0
        self.threads = []
        self.admin_token = None
        self.admin_token_at = 0.0
        self.app_auth = None
        self.username = None
        self.password = None
        self.live_keys = []  # (id, key)
        self.changing = set()  # key ids taken out of the pool to be revoked, disabled or rotated
        self.tokens = collections.deque(maxlen=300)
        self.revocations = []
        self.ambiguous_changes = 0
        self.credit_key = None
        self.credit_admitted = 0
        self.credit_ambiguous = 0
        self.failures = []  # (time, text)
        self.webhooks_owed = []  # (time, type, {key ids})
        self.counter = 0

    # -- helpers ------------------------------------------------------------------------------

    def alive(self):
        return [i for i in self.instances if i.alive]

    def pick(self):
        live = self.alive()
        return random.choice(live) if live else None

    def fail(self, text):
        with self.lock:
            self.failures.append((time.monotonic(), text))

    def token(self):
        """An admin access token, renewed every two minutes (kept while no instance can issue one)."""
        if self.admin_token and time.monotonic() - self.admin_token_at < 120:
            return self.admin_token
        for inst in self.alive():
            a = self.http.call(inst, "admin_token", "POST", "/oauth/token",
                               form={"grant_type": "client_credentials", "scope": "admin"}, auth=self.admin_auth)
            if a.ok:
                self.admin_token = a.json()["access_token"]
                self.admin_token_at = time.monotonic()
                break
        return self.admin_token

    def must(self, ans, what):
        if not ans.ok:
            raise RuntimeError(f"setup: {what} answered {ans.status}: {ans.body[:300]!r}")
        return ans.json()

    # -- setup --------------------------------------------------------------------------------

    def setup(self):
        inst = self.instances[0]
        tok = self.token()
        if not tok:
            raise RuntimeError("setup: the bootstrap admin client could not get a token")
        app = self.must(self.http.call(inst, "setup", "POST", "/v1/admin/clients", bearer=tok, json_body={
            "name": "chaos-app", "grant_types": ["client_credentials", "password", "refresh_token"],
            "scopes": ["read", "write"]}), "creating the load's client")
        self.app_auth = basic(app["client_id"], app["client_secret"])
        self.username = "chaos-" + uuid.uuid4().hex[:8]
        self.password = uuid.uuid4().hex
        self.must(self.http.call(inst, "setup", "POST", "/v1/admin/users", bearer=tok, json_body={
            "username": self.username, "password": self.password, "scopes": ["read", "write"]}), "creating a user")
        for _ in range(LIVE_KEYS):
            self.live_keys.append(self.new_key(inst, record=False))
        k = self.must(self.http.call(inst, "setup", "POST", "/v1/keys", bearer=tok, json_body={
            "name": "chaos-credits", "scopes": ["read"], "environment": "live", "credits": INITIAL_CREDITS}),
            "creating the key with credits")
        self.credit_key = (k["id"], k["key"])

    def new_key(self, inst, record=True):
        a = self.http.call(inst, "create_key", "POST", "/v1/keys", bearer=self.token(), json_body={
            "name": "chaos", "scopes": ["read"], "environment": "live"})
        if not a.ok:
            if not record:
                self.must(a, "creating a key")
            return None
        k = a.json()
        if record:
            self.owe("api_key.created", {k["id"]})
        return (k["id"], k["key"])

    def owe(self, kind, ids):
        with self.lock:
            self.webhooks_owed.append((time.monotonic(), kind, ids))

    def revoked(self, kind, cred):
        with self.lock:
            self.revocations.append(Revocation(kind, cred, time.monotonic()))

    # -- running ------------------------------------------------------------------------------

    def start(self):
        self.go.set()
        threading.Thread(target=self._renew, daemon=True).start()
        for n in range(self.workers):
            t = threading.Thread(target=self._worker, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)

    def _renew(self):
        while not self.stopping:
            self.token()
            time.sleep(5)

    def pause(self):
        """Stops starting operations and waits for those in flight (so balances can be compared)."""
        self.go.clear()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                if self.inflight == 0:
                    return
            time.sleep(0.05)

    def resume(self):
        self.go.set()

    def stop(self):
        self.stopping = True
        self.go.set()

    def _worker(self, n):
        session = {}
        ops = list(WEIGHTS)
        weights = [WEIGHTS[o] for o in ops]
        while not self.stopping:
            self.go.wait()
            if self.stopping:
                return
            with self.lock:
                if not self.go.is_set():
                    continue
                self.inflight += 1
            try:
                inst = self.pick()
                if inst is not None:
                    op = random.choices(ops, weights)[0]
                    getattr(self, "op_" + op)(inst, session)
            except Exception as e:  # a bug in the driver must not look like a quiet service
                self.fail(f"driver error in worker {n}: {e!r}")
            finally:
                with self.lock:
                    self.inflight -= 1
            time.sleep(0.01)

    # -- operations ---------------------------------------------------------------------------

    def op_cc_token(self, inst, _s):
        a = self.http.call(inst, "cc_token", "POST", "/oauth/token", form={"grant_type": "client_credentials",
                                                                          "scope": "read"}, auth=self.app_auth)
        if a.ok:
            self.tokens.append(a.json()["access_token"])
        elif not a.ambiguous:
            self.fail(f"client_credentials answered {a.status} on {inst.name}: {a.body[:200]!r}")

    def login(self, inst):
        a = self.http.call(inst, "login", "POST", "/oauth/token", form={
            "grant_type": "password", "username": self.username, "password": self.password, "scope": "read"},
            auth=self.app_auth)
        if a.ok:
            j = a.json()
            return {"refresh": j["refresh_token"], "access": j["access_token"], "unanswered_since": None, "n": 0}
        if not a.ambiguous:
            self.fail(f"password login answered {a.status} on {inst.name}: {a.body[:200]!r}")
        return None

    def op_refresh(self, inst, session):
        s = session.get("s")
        if s is None or (s["n"] >= 25 and s["unanswered_since"] is None):
            session["s"] = self.login(inst)
            return
        a = self.http.call(inst, "refresh", "POST", "/oauth/token", form={
            "grant_type": "refresh_token", "refresh_token": s["refresh"]}, auth=self.app_auth)
        if a.ok:
            j = a.json()
            s.update(refresh=j["refresh_token"], access=j["access_token"], unanswered_since=None, n=s["n"] + 1)
        elif a.ambiguous:
            # The rotation may have happened with its answer lost: present the same token again
            # (a retry, within TESSERA_REFRESH_RETRY_GRACE) on the next turn.
            if s["unanswered_since"] is None:
                s["unanswered_since"] = time.monotonic()
        else:
            since = s["unanswered_since"]
            extra = "" if since is None else f" (retrying an unanswered rotation from {time.monotonic() - since:.1f} s ago)"
            self.fail(f"refresh rotation refused with {a.status} on {inst.name}{extra}: {a.body[:200]!r}")
            session["s"] = None

    def _verify(self, inst, op, body):
        return self.http.call(inst, op, "POST", "/v1/keys/verify", bearer=self.token(), json_body=body)

    def op_verify(self, inst, _s):
        with self.lock:
            if not self.live_keys:
                return
            kid, key = random.choice(self.live_keys)
        a = self._verify(inst, "verify", {"key": key})
        if a.ok:
            j = a.json()
            if not j.get("valid"):
                with self.lock:
                    changing = kid in self.changing
                if not changing:
                    self.fail(f"a live key verified as {j.get('code')} on {inst.name}")
        elif not a.ambiguous:
            self.fail(f"verify answered {a.status} on {inst.name}: {a.body[:200]!r}")

    def op_verify_credit(self, inst, _s):
        cost = random.randint(1, 3)
        a = self._verify(inst, "verify_credit", {"key": self.credit_key[1], "cost": cost})
        if a.ok:
            j = a.json()
            if j.get("valid"):
                with self.lock:
                    self.credit_admitted += cost
            else:
                self.fail(f"the credit key verified as {j.get('code')} on {inst.name}")
        elif a.ambiguous:
            with self.lock:
                self.credit_ambiguous += cost
        else:
            self.fail(f"verify (credits) answered {a.status} on {inst.name}: {a.body[:200]!r}")

    def op_revoke_token(self, inst, _s):
        try:
            tok = self.tokens.popleft()
        except IndexError:
            return
        a = self.http.call(inst, "revoke_token", "POST", "/oauth/revoke", form={"token": tok}, auth=self.app_auth)
        self._changed(a, inst, "access_token", {"token": tok}, "revoking an access token")

    def _changed(self, a, inst, kind, cred, what):
        if a.ok:
            self.revoked(kind, cred)
        elif a.ambiguous:
            with self.lock:
                self.ambiguous_changes += 1
        else:
            self.fail(f"{what} answered {a.status} on {inst.name}: {a.body[:200]!r}")

    def _take_key(self):
        with self.lock:
            if len(self.live_keys) <= 4:
                return None
            k = self.live_keys.pop(random.randrange(len(self.live_keys)))
            self.changing.add(k[0])
            return k

    def _replenish(self, inst):
        k = self.new_key(inst)
        if k is not None:
            with self.lock:
                self.live_keys.append(k)

    def op_revoke_key(self, inst, _s):
        k = self._take_key()
        if k is None:
            return self._replenish(inst)
        a = self.http.call(inst, "revoke_key", "POST", f"/v1/keys/{k[0]}/revoke", bearer=self.token(),
                           json_body={"reason": "chaos"})
        self._changed(a, inst, "api_key", {"id": k[0], "key": k[1]}, "revoking a key")
        if a.ok:
            self.owe("api_key.revoked", {k[0]})
        self._replenish(inst)

    def op_disable_key(self, inst, _s):
        k = self._take_key()
        if k is None:
            return self._replenish(inst)
        a = self.http.call(inst, "disable_key", "PATCH", f"/v1/keys/{k[0]}", bearer=self.token(),
                           json_body={"enabled": False})
        self._changed(a, inst, "disabled_key", {"id": k[0], "key": k[1]}, "disabling a key")
        self._replenish(inst)

    def op_rotate_key(self, inst, _s):
        k = self._take_key()
        if k is None:
            return self._replenish(inst)
        a = self.http.call(inst, "rotate_key", "POST", f"/v1/keys/{k[0]}/rotate", bearer=self.token(),
                           json_body={"grace_period": 0})
        # With no grace the old key stops at once: refused everywhere, like a revoked one.
        self._changed(a, inst, "rotated_key", {"id": k[0], "key": k[1]}, "rotating a key")
        if a.ok:
            new = a.json()
            self.owe("api_key.rotated", {k[0], new["id"]})
            with self.lock:
                self.live_keys.append((new["id"], new["key"]))
        else:
            self._replenish(inst)

    def op_patch_key(self, inst, _s):
        with self.lock:
            if not self.live_keys:
                return
            kid, _key = random.choice(self.live_keys)
            self.counter += 1
            n = self.counter
        a = self.http.call(inst, "patch_key", "PATCH", f"/v1/keys/{kid}", bearer=self.token(),
                           json_body={"metadata": {"chaos": n}})
        if not a.ok and not a.ambiguous and a.status != 409:  # 409: revoked meanwhile
            self.fail(f"editing a key answered {a.status} on {inst.name}: {a.body[:200]!r}")

    def op_revoke_family(self, inst, _s):
        s = self.login(inst)
        if s is None:
            return
        a = self.http.call(inst, "refresh", "POST", "/oauth/token", form={
            "grant_type": "refresh_token", "refresh_token": s["refresh"]}, auth=self.app_auth)
        if not a.ok:
            if not a.ambiguous:
                self.fail(f"a first refresh answered {a.status} on {inst.name}: {a.body[:200]!r}")
            return
        j = a.json()
        inst2 = self.pick() or inst
        r = self.http.call(inst2, "revoke_family", "POST", "/oauth/revoke",
                           form={"token": j["refresh_token"], "token_type_hint": "refresh_token"}, auth=self.app_auth)
        self._changed(r, inst2, "refresh_family", {"refresh": j["refresh_token"], "access": j["access_token"]},
                      "revoking a refresh token")
