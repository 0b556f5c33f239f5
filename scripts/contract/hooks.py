"""schemathesis hooks for scripts/contract.sh.

Every generated request is a new request, so it gets a new Idempotency-Key:
a schema-valid key that schemathesis generated is swapped for a fresh valid
one before the call. Otherwise its shrunk, repeated keys ("!", "0") reach the
server with different bodies, and SPEC.md's answer to that is 422
`idempotency_key_reused`: correct, but not what a positive-data check tests.
Invalid keys are left as generated, so their rejection is still fuzzed. The
replay rules themselves are the API and end-to-end suites' subject.
"""

import os
import re
import uuid

import schemathesis

HEADER = "Idempotency-Key"
VALID_KEY = re.compile(os.environ["IDEMPOTENCY_KEY_PATTERN"])


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers
    if not headers:
        return
    for name in list(headers):
        if name.lower() == HEADER.lower() and isinstance(headers[name], str) and VALID_KEY.fullmatch(headers[name]):
            headers[name] = f"contract-{uuid.uuid4()}"
