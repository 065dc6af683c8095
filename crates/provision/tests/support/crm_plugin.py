#!/usr/bin/env python3
"""A stand-in SaaS provisioner speaking pedm's provisioner protocol 1 (docs/provisioner-protocol.md),
for crates/provision/tests/plugin.rs. Its "SaaS" is a JSON file ($STATE): role -> members, plus
standing privileges someone made by hand. Every line it reads and writes goes to $TRANSCRIPT
("< " read, "> " written) so the test can check both sides against the JSON Schemas.

Role settings steer it: {"fail": "retryable"|"refused"|"invalid"}, {"crash": true} (exits
mid-call), {"hang": true}, {"garbage": true} (answers a line that is not JSON),
{"wrong_id": true}, {"secret": true} (returns a token for the holder).

While a file $STATE.down exists the "SaaS" is down: every request (not the hello) is answered
with a retryable error and changes nothing (crates/provision/tests/conformance.rs)."""
import json
import os
import sys
import time

STATE = os.environ["STATE"]
TRANSCRIPT = os.environ.get("TRANSCRIPT")
CAPS = [c for c in os.environ.get("CAPS", "grant,revoke,verify,discover,remove_standing").split(",") if c]
PROTOCOL = int(os.environ.get("PROTO", "1"))


def log(direction, line):
    if TRANSCRIPT:
        with open(TRANSCRIPT, "a") as f:
            f.write(direction + " " + line + "\n")


def load():
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"members": {}, "standing": [], "keys": []}


def save(state):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, STATE)


def send(obj):
    line = json.dumps(obj)
    log(">", line)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        log("<", line)
        msg = json.loads(line)
        if msg["type"] == "hello":
            send({"type": "hello", "protocol": PROTOCOL, "name": "crm-standin", "capabilities": CAPS})
            continue
        rid, op = msg["id"], msg["op"]
        if os.path.exists(STATE + ".down"):
            send({"type": "response", "id": rid,
                  "error": {"kind": "retryable", "message": "CRM API unavailable (HTTP 503), try again later"}})
            continue
        grant = msg.get("grant") or {}
        settings = grant.get("settings") or {}
        if settings.get("crash"):
            sys.exit(3)
        if settings.get("hang"):
            time.sleep(3600)
        if settings.get("garbage"):
            sys.stdout.write("this is not json\n")
            sys.stdout.flush()
            continue
        if settings.get("wrong_id"):
            send({"type": "response", "id": rid + 100, "result": {}})
            continue
        if settings.get("fail"):
            kind = settings["fail"]
            send({"type": "response", "id": rid, "error": {"kind": kind, "message": "scripted " + kind}})
            continue
        state = load()
        role = settings.get("crm_role", "Administrator")
        members = state["members"].setdefault(role, [])
        user = grant.get("user")
        result = {}
        if op == "grant":
            if user not in members:
                members.append(user)
            state["keys"].append(msg["idempotency_key"])
            result["detail"] = "added %s to %s" % (user, role)
            if settings.get("secret"):
                result["secret"] = "tok-" + msg["idempotency_key"][:8]
        elif op == "revoke":
            if user in members:
                members.remove(user)
            result["detail"] = "removed %s from %s" % (user, role)
        elif op == "verify":
            result["present"] = user in members
            result["detail"] = "%s %s %s" % (user, "is in" if user in members else "is not in", role)
        elif op == "discover":
            result["standing"] = state["standing"]
        elif op == "remove_standing":
            p = msg["standing"]
            state["standing"] = [
                s for s in state["standing"]
                if not (s["account"] == p["account"] and s["privilege"] == p["privilege"])
            ]
            result["detail"] = "took %s from %s" % (p["privilege"], p["account"])
        save(state)
        send({"type": "response", "id": rid, "result": result})


if __name__ == "__main__":
    main()
