"""fleet's Python client (`fleet` 0.1.3 on PyPI), unchanged, against a
flotilla server: list, create, set desired state, unit states, machines,
destroy. Run by cli/tests/fleet_clients.rs with

    python client.py ENDPOINT CA_FILE CERT_FILE KEY_FILE UNIT_NAME

It prints one JSON object of what it saw; the Rust test checks it.
"""

import json
import sys
import time

import httplib2
from fleet import v1 as fleet

endpoint, ca, cert, key, name = sys.argv[1:6]

# fleet's clients authenticate with a client certificate over TLS.
http = httplib2.Http(ca_certs=ca)
http.add_certificate(key, cert, "")
client = fleet.Client(endpoint, http=http)

seen = {}
seen["machines"] = sorted(m.id for m in client.list_machines())

unit = fleet.Unit(
    from_string="[Unit]\nDescription=from python\n\n[Service]\nExecStart=/bin/sleep infinity\n",
    desired_state="launched",
)
created = client.create_unit(name, unit)
seen["created"] = {"name": created.name, "desiredState": created.desiredState}
seen["listed"] = sorted(u.name for u in client.list_units())

# Wait for a machine to report it running (the test gives a deadline).
deadline = time.time() + float(sys.argv[6]) if len(sys.argv) > 6 else time.time() + 60
states = []
while time.time() < deadline:
    states = [
        {"name": s.name, "machineID": s.machineID, "active": s.systemdActiveState, "hash": s.hash}
        for s in client.list_unit_states(unit_name=name)
    ]
    if states and states[0]["active"] == "active":
        break
    time.sleep(0.2)
seen["states"] = states

stopped = client.set_unit_desired_state(name, "loaded")
seen["stopped"] = stopped.desiredState
try:
    client.set_unit_desired_state(name, "bogus")
    seen["bogus"] = "accepted"
except ValueError as e:
    seen["bogus"] = "refused by the client: %s" % e

try:
    client.get_unit("missing.service")
    seen["missing"] = "found"
except fleet.APIError as e:
    seen["missing"] = {"code": e.code, "message": e.message}

seen["destroyed"] = client.destroy_unit(name)
seen["after"] = sorted(u.name for u in client.list_units())
print(json.dumps(seen))
