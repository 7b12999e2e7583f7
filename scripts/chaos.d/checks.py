"""What is checked after every fault, with the load paused: from Postgres, from a Redis subscriber,
from the catch-up API, and against what the load recorded."""

import collections
import subprocess
import time

# Revocations checked per kind and phase on each instance (the newest ones, where most can go wrong).
CHECK_PER_KIND = 40
# How long a revoked credential may still be accepted after its revocation was answered (the
# contract says 1 s; the slack is for a debug build on a busy machine).
APPLY_WITHIN = 3.0


def eventually(probe, within, step=0.1):
    deadline = time.monotonic() + within
    while True:
        if probe():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


class Phase:
    """One fault (or the baseline): its window and what was found."""

    def __init__(self, name, description):
        self.name = name
        self.description = description
        self.start = time.monotonic()
        self.fault_start = None
        self.fault_end = None
        self.end = None
        self.killed = None  # (instance name, time) for an instance fault
        self.notes = []
        self.failures = []
        self.metrics = {}


def http_rules(phase, rows, request_timeout):
    """No 500 ever; 503 only during the fault and within 5 s of recovery, each within the request
    timeout; no hung request; connection errors only from a killed instance."""
    codes = collections.Counter()
    by_op = collections.Counter()
    last_bad = None
    slowest_503 = 0.0
    for started, ended, inst, op, status in rows:
        codes[str(status)] += 1
        by_op[op] += 1
        latency = ended - started
        in_fault = phase.fault_start is not None and phase.fault_start <= ended and (
            phase.fault_end is None or started <= phase.fault_end + 5.0)
        if isinstance(status, int) and status >= 500 and status != 503:
            phase.failures.append(f"{status} from {inst} on {op}")
        elif status == 503:
            slowest_503 = max(slowest_503, latency)
            if not in_fault:
                phase.failures.append(f"503 from {inst} on {op} outside the fault window (+5 s)")
            if latency > request_timeout + 0.5:
                phase.failures.append(f"503 from {inst} on {op} took {latency:.1f} s (> {request_timeout} s)")
        elif status == "timeout":
            phase.failures.append(f"no answer from {inst} on {op} within {latency:.1f} s")
        elif status == "conn":
            killed = phase.killed and phase.killed[0] == inst and ended >= phase.killed[1] - 0.5
            if not killed:
                phase.failures.append(f"connection error from {inst} on {op}")
        if (status == 503 or status == "conn") and phase.fault_end is not None:
            last_bad = max(last_bad or 0.0, ended)
    phase.metrics["requests"] = len(rows)
    phase.metrics["codes"] = dict(sorted(codes.items()))
    phase.metrics["by_op"] = dict(sorted(by_op.items()))
    phase.metrics["slowest_503"] = slowest_503
    if phase.fault_end is not None:
        phase.metrics["recovery"] = max(0.0, (last_bad or phase.fault_end) - phase.fault_end)
    # Collapse repeats so one broken minute does not print ten thousand lines.
    phase.failures = [f"{n}× {f}" if n > 1 else f for f, n in collections.Counter(phase.failures).items()]


def outbox(phase, sql, subscriber, disorder_before, within=15.0):
    """Every committed event sequenced with no gap, published, and seen by the subscriber in order.
    (published_at cannot tell the order: it is the publishing transaction's start time.)"""
    state = {}

    def drained():
        try:
            state["pending"] = int(sql.value(
                "SELECT count(*) FROM revocation_events WHERE seq IS NULL OR published_at IS NULL"))
        except RuntimeError as e:
            state["pending"] = f"unknown ({e})"
            return False
        return state["pending"] == 0

    eventually(drained, within, 0.25)
    total, top, distinct = (int(x or 0) for x in sql.rows(
        "SELECT count(*), coalesce(max(seq), 0), count(DISTINCT seq) FROM revocation_events")[0])
    seqs = {int(r[0]) for r in sql.rows("SELECT seq FROM revocation_events WHERE seq IS NOT NULL")}
    lost = 0 if state.get("pending") == 0 else state.get("pending")
    if lost:
        phase.failures.append(f"{lost} event(s) committed but not published after {within:.0f} s")
    if not (total == top == distinct):
        phase.failures.append(f"seq is not gap-free: {total} events, highest seq {top}, {distinct} distinct")

    def all_seen():
        seen, _d, _o = subscriber.snapshot()
        return seqs <= seen

    eventually(all_seen, 5.0, 0.1)
    seen, dups, disorder = subscriber.snapshot()
    missing = sorted(seqs - seen)
    if missing:
        phase.failures.append(f"the Redis subscriber never saw {len(missing)} event(s), first seq {missing[0]}")
    new_disorder = disorder[disorder_before:]
    if new_disorder:
        phase.failures.append(f"the Redis subscriber saw {len(new_disorder)} event(s) out of order, e.g. "
                              f"seq {new_disorder[0][0]} after {new_disorder[0][1]}")
    phase.metrics["events"] = total
    phase.metrics["lost"] = (lost if isinstance(lost, int) else 0) + len(missing)
    phase.metrics["duplicates_seen"] = dups
    return seqs


def catch_up(phase, load, inst, sql):
    """GET /v1/revocations from 0 on this instance says exactly what Postgres says, in order."""
    want = [tuple(r) for r in sql.rows(
        "SELECT seq, kind, subject_id FROM revocation_events WHERE seq IS NOT NULL ORDER BY seq")]
    got, after = [], 0
    while True:
        a = load.http.call(inst, "check", "GET", f"/v1/revocations?after={after}&limit=1000", bearer=load.token(),
                           record=False)
        if not a.ok:
            phase.failures.append(f"GET /v1/revocations on {inst.name} answered {a.status}")
            return
        events = a.json()["events"]
        got += [(str(e["seq"]), e["kind"], e["id"]) for e in events]
        if len(events) < 1000:
            break
        after = events[-1]["seq"]
    if got != want:
        phase.failures.append(f"GET /v1/revocations on {inst.name} differs from Postgres "
                              f"({len(got)} events vs {len(want)})")


def refused(load, inst, rev):
    """Whether `inst` refuses the credential `rev` stopped."""
    c = rev.cred

    def introspect(token):
        a = load.http.call(inst, "check", "POST", "/oauth/introspect", form={"token": token},
                           auth=load.admin_auth, record=False)
        return a.ok and a.json().get("active") is False

    if rev.kind == "access_token":
        return introspect(c["token"])
    if rev.kind == "refresh_family":
        if not introspect(c["access"]):
            return False
        a = load.http.call(inst, "check", "POST", "/oauth/token", form={
            "grant_type": "refresh_token", "refresh_token": c["refresh"]}, auth=load.app_auth, record=False)
        return a.status == 400 and (a.json() or {}).get("error") == "invalid_grant"
    want = {"api_key": {"REVOKED"}, "disabled_key": {"DISABLED"}, "rotated_key": {"EXPIRED", "REVOKED"}}[rev.kind]
    a = load.http.call(inst, "check", "POST", "/v1/keys/verify", json_body={"key": c["key"]}, bearer=load.token(),
                       record=False)
    return a.ok and a.json().get("valid") is False and a.json().get("code") in want


def applied(phase, load, instances, since):
    """Every credential revoked (or narrowed) since `since` is refused on every surviving instance."""
    with load.lock:
        recent = [r for r in load.revocations if r.at >= since]
    by_kind = collections.defaultdict(list)
    for r in recent:
        by_kind[r.kind].append(r)
    checked = 0
    for kind, revs in sorted(by_kind.items()):
        for rev in revs[-CHECK_PER_KIND:]:
            for inst in instances:
                checked += 1
                left = max(0.0, APPLY_WITHIN - (time.monotonic() - rev.at))
                if not eventually(lambda: refused(load, inst, rev), left, 0.2):
                    phase.failures.append(f"a revoked {kind} is still accepted on {inst.name}")
    phase.metrics["revocations"] = {k: len(v) for k, v in sorted(by_kind.items())}
    phase.metrics["refusals_checked"] = checked


def families(phase, sql):
    """No refresh family has two live successors."""
    two = sql.rows("SELECT family_id FROM refresh_tokens GROUP BY family_id, generation HAVING count(*) > 1")
    live = sql.rows(
        "SELECT t.family_id FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id "
        "WHERE f.revoked_at IS NULL AND t.spent_at IS NULL GROUP BY t.family_id HAVING count(*) > 1")
    if two:
        phase.failures.append(f"{len(two)} refresh famil(y/ies) with two tokens of one generation")
    if live:
        phase.failures.append(f"{len(live)} refresh famil(y/ies) with two live successors")
    phase.metrics["families"] = int(sql.value("SELECT count(*) FROM refresh_families"))


def credits(phase, load, inst, initial):
    """The balance is the initial one less every admitted cost (less some of the unanswered ones)."""
    a = load.http.call(inst, "check", "GET", f"/v1/keys/{load.credit_key[0]}", bearer=load.token(), record=False)
    if not a.ok:
        phase.failures.append(f"GET the credit key answered {a.status}")
        return
    remaining = a.json().get("credits")
    with load.lock:
        admitted, unknown = load.credit_admitted, load.credit_ambiguous
    high = initial - admitted
    low = high - unknown
    phase.metrics["credits"] = {"admitted": admitted, "unanswered": unknown, "remaining": remaining,
                                "expected": high if unknown == 0 else f"{low}..{high}"}
    if remaining is None or not (low <= remaining <= high):
        phase.failures.append(f"credits not exact: {remaining} remaining, expected {low}..{high} "
                              f"({admitted} admitted, {unknown} unanswered)")


def webhooks(phase, load, receiver, sql, within=40.0):
    """Every webhook event owed (its change answered 200) arrived at least once. For a few missing
    ones, what Postgres holds of their deliveries (status, attempts, the last attempt's error) is
    noted, so a failure says whether the event was never written, never tried, or kept failing."""
    with load.lock:
        owed = list(load.webhooks_owed)

    def missing():
        got = receiver.received()
        return [(k, ids) for _t, k, ids in owed if not any((k, i) in got for i in ids)]

    eventually(lambda: not missing(), within, 0.5)
    left = missing()
    phase.metrics["webhooks_owed"] = len(owed)
    phase.metrics["webhooks_missing"] = len(left)
    if left:
        phase.failures.append(f"{len(left)} webhook event(s) never delivered, e.g. {left[0][0]} {sorted(left[0][1])}")
        for kind, ids in left[:5]:
            phase.notes.append(f"undelivered {kind} {sorted(ids)}: {delivery_state(sql, kind, ids)}")


def delivery_state(sql, kind, ids):
    """What Postgres holds of the deliveries of one event (for a failure's note)."""
    quoted = ", ".join("'" + str(i).replace("'", "") + "'" for i in ids)
    try:
        rows = sql.rows(f"""
SELECT d.status, d.attempts, round(extract(epoch FROM d.next_attempt_at - now())::numeric, 1),
       round(extract(epoch FROM now() - d.created_at)::numeric, 1),
       coalesce((SELECT coalesce(a.error, a.response_code::text) FROM webhook_attempts a
                 WHERE a.delivery_id = d.id ORDER BY a.at DESC LIMIT 1), '-')
FROM webhook_deliveries d
WHERE d.event_type = '{kind.replace("'", "")}' AND d.body::jsonb -> 'data' ->> 'key_id' IN ({quoted})""")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return f"(query failed: {e})"
    if not rows:
        return "no delivery row"
    return "; ".join(f"status {r[0]}, attempts {r[1]}, next in {r[2]} s, created {r[3]} s ago, last: {r[4]}"
                     for r in rows)
