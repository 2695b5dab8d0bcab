"""Schemathesis hooks for .ci/fuzz-api.sh (loaded through SCHEMATHESIS_HOOKS).

The run's session follows its own password changes. `PUT /users/me` with a new password ends every
earlier session of the account and hands the caller a new access token in a cookie (README,
Security); a client using `Authorization: Bearer` takes the new token from there, and so does this
run, instead of meeting 401 on every operation for the rest of it.
"""

import os
import threading

import schemathesis

ACCESS_COOKIE = "access_token"
PASSWORD_CHANGING_OPERATION = "PUT /api/v1/users/me"

_lock = threading.Lock()
_access_token = os.environ["FUZZ_ACCESS_TOKEN"]
# The OpenAI-compatible API (/v1) is opened by a personal API key, never by the session.
_api_key = os.environ["FUZZ_API_KEY"]


@schemathesis.auth(refresh_interval=None)
class CurrentAccessToken:
    def get(self, case, context):
        with _lock:
            return _access_token

    def set(self, case, data, context):
        case.headers = case.headers or {}
        token = _api_key if case.operation.path.startswith("/v1/") else data
        case.headers["Authorization"] = f"Bearer {token}"


@schemathesis.hook
def after_call(context, case, response):
    global _access_token
    if case.operation.label != PASSWORD_CHANGING_OPERATION:
        return
    for cookie in response.headers.get("set-cookie", []):
        name, _, rest = cookie.partition("=")
        token = rest.split(";", 1)[0].strip()
        if name.strip() == ACCESS_COOKIE and token:
            with _lock:
                _access_token = token
