"""scripts/chaos's driver: load, faults one at a time, checks after each, a report. Started by
scripts/chaos with a JSON description of the processes it started (see that script)."""

import collections
import json
import signal
import sys
import threading
import time

import checks
from checks import Phase
from faults import Prober, Receiver, Services, rss_mib
from load import INITIAL_CREDITS, Instance, Load
from wire import Http, Recorder, Sql, Subscriber

# Seconds: baseline, load before a fault, outage, load after recovery; rounds of the four faults.
PLANS = {
    "short": {"baseline": 8, "before": 2, "outage": 5, "pg_outage": 6, "after": 6, "rounds": 1},
    "long": {"baseline": 30, "before": 5, "outage": 15, "pg_outage": 10, "after": 20, "rounds": 2},
}
WORKERS = 6
SOAK_SAMPLE = 10.0


class Run:
    def __init__(self, cfg):
        self.cfg = cfg
        self.timeout = cfg["request_timeout"]
        self.recorder = Recorder()
        self.http = Http(self.recorder, timeout=self.timeout + 5)
        self.instances = [Instance(d) for d in cfg["instances"]]
        self.sql = Sql(cfg["pg"]["url"])
        self.load = Load(self.http, self.instances, cfg["admin_secret"], WORKERS)
        self.services = Services(cfg, self.load, self.sql)
        self.subscriber = Subscriber(cfg["redis"]["port"], cfg["prefix"])
        self.prober = Prober(self.load)
        self.receiver = None
        self.phases = []
        self.disorder_seen = 0
        self.log_lines = []

    def say(self, text):
        line = f"chaos: {text}"
        print(line, file=sys.stderr, flush=True)

    # -- setup --------------------------------------------------------------------------------

    def setup(self):
        self.subscriber.start()
        self.load.setup()
        self.webhooks_on()
        self.load.start()
        self.prober.start()

    def webhooks_on(self):
        """Webhooks join the load and the checks when this build has them (POST /v1/webhooks exists)."""
        receiver = Receiver()
        inst = self.instances[0]
        a = self.http.call(inst, "setup", "POST", "/v1/webhooks", bearer=self.load.token(), json_body={
            "url": f"http://127.0.0.1:{receiver.port}/hook", "description": "chaos",
            "events": ["api_key.created", "api_key.rotated", "api_key.revoked"]}, record=False)
        if a.status in (404, 405):
            receiver.server.shutdown()
            self.say("webhooks: POST /v1/webhooks is not there in this build; their checks are off")
            return
        if a.status != 201:
            raise RuntimeError(f"setup: creating a webhook answered {a.status}: {a.body[:300]!r}")
        self.receiver = receiver
        self.say("webhooks: on (an endpoint on 127.0.0.1 receives every key event)")

    # -- phases -------------------------------------------------------------------------------

    def run_load(self, seconds):
        time.sleep(seconds)

    def check(self, phase, since=None, restarted=None):
        self.load.pause()
        phase.end = time.monotonic()
        try:
            rows = self.recorder.between(phase.start, phase.end)
            checks.http_rules(phase, rows, self.timeout)
            checks.outbox(phase, self.sql, self.subscriber, self.disorder_seen)
            self.disorder_seen = len(self.subscriber.snapshot()[2])
            alive = self.load.alive()
            for inst in alive:
                checks.catch_up(phase, self.load, inst, self.sql)
            checks.applied(phase, self.load, alive, phase.start if since is None else since)
            checks.families(phase, self.sql)
            checks.credits(phase, self.load, alive[0], INITIAL_CREDITS)
            if self.receiver is not None:
                checks.webhooks(phase, self.load, self.receiver, self.sql)
            with self.load.lock:
                phase.failures += [t for at, t in self.load.failures if phase.start <= at < phase.end]
            self.propagation(phase)
        except Exception as e:
            phase.failures.append(f"checking failed: {e!r}")
        finally:
            self.load.resume()
        # The same failure a thousand times is one line with its count.
        counted = collections.Counter(phase.failures)
        phase.failures = [f"{n}× {f}" if n > 1 else f for f, n in counted.items()]
        self.phases.append(phase)
        verdict = "ok" if not phase.failures else f"FAILED ({len(phase.failures)})"
        self.say(f"{phase.name}: {verdict}; {json.dumps(self.summary(phase))}")
        for f in phase.failures:
            self.say(f"  - {f}")
        if phase.failures:
            for n in phase.notes:
                self.say(f"  note: {n}")

    def propagation(self, phase):
        exempt = phase.metrics.pop("_probe_exempt", None)
        times = []
        for t0, secs, a, b in self.prober.results:
            if not (phase.start <= t0 < phase.end):
                continue
            if exempt and exempt[0] <= t0 <= exempt[1]:
                continue
            if not any(i.name == b and i.alive for i in self.instances):
                continue
            if (secs is not None and phase.name == "postgres-restart"
                    and phase.fault_start - checks.APPLY_WITHIN <= t0 <= phase.fault_end):
                # While Postgres is down no instance can read the revocation log (a bus message is
                # only a hint to read it), so the clock starts when Postgres is back.
                secs = t0 + secs - max(t0, phase.fault_end)
            times.append(secs)
            if secs is None or secs > checks.APPLY_WITHIN:
                shown = "never (15 s)" if secs is None else f"{secs:.2f} s"
                phase.failures.append(f"a key revoked on {a} was refused on {b} after {shown}")
        known = [t for t in times if t is not None]
        phase.metrics["propagation"] = {"probes": len(times), "max_s": round(max(known), 3) if known else None}

    def summary(self, p):
        m = p.metrics
        return {k: m.get(k) for k in ("requests", "codes", "recovery", "ready_after", "events", "lost", "propagation",
                                      "credits")}

    def baseline(self, seconds):
        phase = Phase("baseline", f"{seconds} s of mixed load, no fault")
        self.run_load(seconds)
        self.check(phase)

    def fault(self, name, description, inject, recover, plan, outage):
        phase = Phase(name, description)
        self.run_load(plan["before"])
        phase.fault_start = time.monotonic()
        self.say(f"{name}: injecting ({description})")
        inject(phase)
        self.run_load(outage)
        recover(phase)
        phase.fault_end = time.monotonic()
        watcher = threading.Thread(target=self.watch_recovery, args=(phase,), daemon=True)
        watcher.start()
        self.run_load(plan["after"])
        watcher.join()
        self.check(phase)
        return phase

    def watch_recovery(self, phase, within=30.0):
        """Seconds from the end of the fault until every live instance is ready with Postgres and
        Redis up, and no committed event waits to be published."""
        while time.monotonic() - phase.fault_end < within:
            ready = True
            for inst in self.load.alive():
                a = self.http.call(inst, "readyz", "GET", "/readyz", record=False)
                j = a.json() if a.status == 200 else None
                if not j or j.get("postgres") != "up" or j.get("redis") != "up":
                    ready = False
            try:
                ready = ready and self.sql.value(
                    "SELECT count(*) FROM revocation_events WHERE seq IS NULL OR published_at IS NULL") == "0"
            except RuntimeError:
                ready = False
            if ready:
                phase.metrics["ready_after"] = time.monotonic() - phase.fault_end
                return
            time.sleep(0.1)
        phase.failures.append(f"not recovered {within:.0f} s after the fault ended (readiness, outbox)")

    def redis_kill(self, plan):
        self.fault("redis-kill", "Redis SIGKILLed, restarted after the outage",
                   lambda _p: self.services.redis_kill(), lambda _p: self.services.redis_start(),
                   plan, plan["outage"])

    def redis_stall(self, plan):
        self.fault("redis-stall", "Redis paused with SIGSTOP (a network stall), then SIGCONT",
                   lambda _p: self.services.redis_signal(signal.SIGSTOP),
                   lambda _p: self.services.redis_signal(signal.SIGCONT), plan, plan["outage"])

    def pg_restart(self, plan):
        self.fault("postgres-restart", "Postgres stopped (fast shutdown), started again after the outage",
                   lambda _p: self.services.pg_stop(), lambda _p: self.services.pg_start(),
                   plan, plan["pg_outage"])

    def instance_kill(self, plan):
        holder = {}

        def inject(phase):
            t0 = time.monotonic()
            name, psql = self.services.hold_relay()
            victim = next((i for i in self.instances if i.name == name), None)
            if victim is None:
                victim = self.instances[0]
                phase.notes.append("the relay lock holder was not caught; killed the first instance")
            else:
                phase.notes.append(f"{name} was killed while holding the relay lock, stalled mid-pass")
            self.services.kill_instance(victim)
            phase.killed = (victim.name, time.monotonic())
            if psql is not None:
                psql.wait()
            phase.metrics["_probe_exempt"] = (t0, time.monotonic() + 1.0)
            holder["victim"] = victim

        def recover(_phase):
            pass  # the survivor carries on alone; the victim is restarted after the checks

        phase = self.fault("instance-kill", "the instance holding the relay lock SIGKILLed", inject, recover,
                           plan, plan["outage"])
        victim = holder["victim"]
        restart = Phase(f"{victim.name}-restart", f"{victim.name} started again: it catches up on everything")
        restart.start = phase.end
        self.services.restart_instance(victim)
        self.run_load(plan["after"])
        self.check(restart, since=0.0)

    def faults(self, plan):
        self.baseline(plan["baseline"])
        for _ in range(plan["rounds"]):
            self.redis_kill(plan)
            self.pg_restart(plan)
            self.redis_stall(plan)
            self.instance_kill(plan)

    def soak(self, minutes):
        phase = Phase("soak", f"{minutes} min of mixed load, RSS sampled every {SOAK_SAMPLE:.0f} s")
        samples = []
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            time.sleep(SOAK_SAMPLE)
            samples.append((time.monotonic() - phase.start, [rss_mib(i.pid) for i in self.instances]))
        self.check(phase)
        warm = max(60.0, 0.2 * minutes * 60)
        after = [s for s in samples if s[0] >= warm]
        rss = {}
        for n, inst in enumerate(self.instances):
            series = [v[n] for _t, v in after if v[n] is not None]
            if len(series) < 4:
                phase.failures.append(f"too few RSS samples of {inst.name} after warm-up ({len(series)})")
                continue
            first = sum(series[:3]) / 3
            last = sum(series[-3:]) / 3
            growth = last - first
            ordered = sorted(series)
            rss[inst.name] = {"after_warmup_mib": round(first, 1), "at_end_mib": round(last, 1),
                              "growth_mib": round(growth, 1), "min_mib": round(ordered[0], 1),
                              "median_mib": round(ordered[len(ordered) // 2], 1), "peak_mib": round(ordered[-1], 1),
                              "samples": len(series)}
            if growth > max(5.0, 0.10 * first):
                phase.failures.append(f"{inst.name} RSS grew {growth:.1f} MiB after warm-up "
                                      f"({first:.1f} → {last:.1f} MiB)")
        phase.metrics["rss"] = rss
        phase.metrics["rss_samples"] = [(round(t), [None if x is None else round(x, 1) for x in v])
                                        for t, v in samples]
        phase.metrics["warmup_s"] = warm
        self.say(f"soak RSS: {json.dumps(rss)}")

    # -- report -------------------------------------------------------------------------------

    def report(self, mode, elapsed):
        out = [f"# Chaos run ({mode})", "",
               f"{len(self.instances)} instances, {WORKERS} load workers, TESSERA_REQUEST_TIMEOUT="
               f"{self.timeout} s, webhooks {'on' if self.receiver else 'off (not in this build)'}; "
               f"{elapsed:.0f} s in all.", "",
               "| phase | requests | answers by status | slowest 503 | recovered after | events | lost | "
               "revocation seen elsewhere (max) | credits | result |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for p in self.phases:
            m = p.metrics
            codes = ", ".join(f"{k}: {v}" for k, v in m.get("codes", {}).items())
            rec = "—" if "recovery" not in m else f"{max(m['recovery'], m.get('ready_after', 0)):.1f} s"
            s503 = "—" if not m.get("slowest_503") else f"{m['slowest_503']:.2f} s"
            prop = m.get("propagation", {})
            pmax = "—" if not prop.get("max_s") else f"{prop['max_s']:.2f} s ({prop['probes']} probes)"
            cr = m.get("credits", {})
            credit = f"{cr.get('remaining')} = {cr.get('expected')}" if cr else "—"
            result = "ok" if not p.failures else "**FAILED**"
            out.append(f"| {p.name} | {m.get('requests', 0)} | {codes} | {s503} | {rec} | {m.get('events', '?')} "
                       f"| {m.get('lost', '?')} | {pmax} | {credit} | {result} |")
        out.append("")
        for p in self.phases:
            lines = [f"- {n}" for n in p.notes] + [f"- FAILED: {f}" for f in p.failures]
            extra = p.metrics.get("rss")
            if extra:
                lines += [f"- RSS {k}: {v}" for k, v in extra.items()]
            if lines or p.description:
                out.append(f"**{p.name}** — {p.description}. Revocations made: "
                           f"{p.metrics.get('revocations', {})}; refusals checked: "
                           f"{p.metrics.get('refusals_checked', 0)}; events the subscriber got twice, live, so far: "
                           f"{p.metrics.get('duplicates_seen', 0)}"
                           + (f"; webhooks owed {p.metrics.get('webhooks_owed')}, missing "
                              f"{p.metrics.get('webhooks_missing')}" if self.receiver else "") + ".")
                out += lines
                out.append("")
        failed = [p.name for p in self.phases if p.failures]
        out.append("Result: " + ("every check passed, 0 events lost." if not failed else
                                 f"FAILED in {', '.join(failed)}."))
        return "\n".join(out) + "\n"


def main():
    cfg = json.load(open(sys.argv[1]))
    mode = cfg["mode"]
    run = Run(cfg)
    start = time.monotonic()
    try:
        run.setup()
        if mode == "soak":
            run.soak(cfg["soak_minutes"])
        else:
            run.faults(PLANS[mode])
    except Exception as e:
        final = Phase("aborted", "the run could not go on")
        final.failures.append(repr(e))
        run.phases.append(final)
    finally:
        run.load.stop()
        run.subscriber.stopping = True
        run.services.close()
    text = run.report(mode if mode != "soak" else f"soak, {cfg['soak_minutes']} min", time.monotonic() - start)
    with open(cfg["report"], "w") as f:
        f.write(text)
    print(text)
    return 1 if any(p.failures for p in run.phases) else 0


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"chaos: thread error {a.exc_value!r}", file=sys.stderr)
    sys.exit(main())
