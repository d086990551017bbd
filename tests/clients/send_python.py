"""Send Engage audience traffic to AMC Sync with the official Segment Python
client (segment-analytics-python), unchanged except for its `host`.

Usage: send_python.py HOST WRITE_KEY AUDIENCE_KEY COUNT [CANARY_EMAIL [CANARY_PHONE]]
Sends COUNT `Audience Entered` track calls and COUNT identify calls (trait
`<AUDIENCE_KEY>_id: true`) for distinct users, then flushes. Exits 1 if the
client reported any error (it counts only HTTP 200 as success).
"""
import sys

import segment.analytics as analytics

host, write_key, audience, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
canary = sys.argv[5] if len(sys.argv) > 5 else None
canary_phone = sys.argv[6] if len(sys.argv) > 6 else None
errors = []

analytics.write_key = write_key
analytics.host = host
analytics.on_error = lambda error, items: errors.append(repr(error))
analytics.max_retries = 2

settings = {"advertiserId": "585806696618602999", "countryCode": "US", "description": "python client test"}
for i in range(count):
    email = canary if (canary and i == 0) else f"py{i}@example.com"
    properties = {"audience_key": audience, audience: True, "first_name": "Py", "postal": "94105"}
    if canary_phone and i == 0:
        properties["phone"] = canary_phone
    analytics.track(
        user_id=f"py_user_{i}",
        event="Audience Entered",
        properties=properties,
        context={"traits": {"email": email},
                 "personas": {"computation_key": audience, "computation_class": "audience",
                              "audience_settings": settings}},
    )
    identify_key = audience + "_id"
    analytics.identify(
        user_id=f"py_user_{i}",
        traits={identify_key: True, "email": f"py{i}@example.com"},
        context={"personas": {"computation_key": identify_key, "computation_class": "audience",
                              "audience_settings": settings}},
    )
analytics.flush()
analytics.shutdown()
if errors:
    print("errors:", errors, file=sys.stderr)
    sys.exit(1)
print(f"sent {count} track + {count} identify")
