"""The official `openai` Python SDK against rovertchat's /v1 (run by .ci/openai-conformance.sh).

Needs BASE (the server's URL), and DB_KIND / DB_TARGET (sqlite path or PostgreSQL URL) to expire a
key in the database. Every check raises on failure; the exit status is 0 only when all pass.
"""

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request

import openai

BASE = os.environ["BASE"]
API = f"{BASE}/api/v1"
PASSWORD = "Conformance-pass-2024!"


def call(method, path, body=None, token=None, form=None):
    data, headers = None, {}
    if body is not None:
        data, headers["content-type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data = "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in form.items()).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{API}{path}", data=data, headers=headers, method=method)
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


def sign_up(username):
    user = call("POST", "/auth/register", {"username": username, "email": f"{username}@example.com", "password": PASSWORD})
    token = call("POST", "/auth/login", form={"username": username, "password": PASSWORD})["access_token"]
    return user, token


def new_key(token, **fields):
    return call("POST", "/api-keys", {"name": "conformance", **fields}, token)


def client(key):
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key=key, max_retries=0, timeout=30)


def expect(exception, action, what):
    try:
        action()
    except exception as err:
        print(f"ok: {what} -> {type(err).__name__} ({err.status_code})")
        return
    except Exception as err:  # noqa: BLE001 - reported as the failure it is
        raise AssertionError(f"{what}: expected {exception.__name__}, got {type(err).__name__}: {err}") from err
    raise AssertionError(f"{what}: expected {exception.__name__}, nothing was raised")


def expire(prefix):
    sql = f"UPDATE api_keys SET expires_at = '2020-01-01 00:00:00' WHERE prefix = '{prefix}'"
    if os.environ["DB_KIND"] == "sqlite":
        with sqlite3.connect(os.environ["DB_TARGET"]) as db:
            db.execute(sql)
    else:
        subprocess.run(["psql", os.environ["DB_TARGET"], "-qc", sql], check=True)


def main():
    admin, admin_token = sign_up("conformance_admin")
    user, user_token = sign_up("conformance_user")
    key = new_key(user_token)["key"]
    sdk = client(key)

    ids = [m.id for m in sdk.models.list()]
    assert "llama3.2:1b" in ids and "qwen3:0.6b" in ids, ids
    assert sdk.models.retrieve("llama3.2:1b").id == "llama3.2:1b"
    print("ok: models.list and models.retrieve")

    completion = sdk.chat.completions.create(model="llama3.2:1b", messages=[{"role": "user", "content": "Why is the sky blue?"}])
    assert completion.choices[0].message.content == "Echo: Why is the sky blue?", completion
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens > 0 and completion.usage.total_tokens > completion.usage.completion_tokens
    print("ok: chat completion")

    stream = sdk.chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "Tell me a story"}], stream=True, stream_options={"include_usage": True}
    )
    content, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            content += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert content == "Echo: Tell me a story", content
    assert usage is not None and usage.completion_tokens > 0, usage
    print("ok: streamed chat completion with usage")

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    asked = [{"role": "user", "content": "Weather in Lisbon?"}]
    called = sdk.chat.completions.create(model="qwen3:0.6b", messages=asked, tools=tools, reasoning_effort="none")
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call_ = choice.message.tool_calls[0]
    assert call_.function.name == "get_weather" and isinstance(json.loads(call_.function.arguments), dict)
    answered = sdk.chat.completions.create(
        model="qwen3:0.6b",
        reasoning_effort="none",
        tools=tools,
        messages=asked + [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call_.id, "content": '{"temp_c": 18}'}],
    )
    assert answered.choices[0].finish_reason == "stop" and answered.choices[0].message.content
    print("ok: tool call round trip")

    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    image = sdk.chat.completions.create(
        model="llama3.2:1b",
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}],
    )
    assert image.choices[0].message.content == "Echo: What is this?", image
    print("ok: image part")

    embedded = sdk.embeddings.create(model="llama3.2:1b", input=["a lighthouse", "a ship"])
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 16, embedded
    assert abs(sum(x * x for x in embedded.data[0].embedding) - 1.0) < 1e-3
    floats = sdk.embeddings.create(model="llama3.2:1b", input="a lighthouse", encoding_format="float")
    assert all(abs(a - b) < 1e-6 for a, b in zip(floats.data[0].embedding, embedded.data[0].embedding))
    print("ok: embeddings (base64, the SDK's default, and float)")

    expect(openai.AuthenticationError, lambda: client("rc-" + "x" * 48).models.list(), "a bad key")
    revoked = new_key(user_token)
    call("DELETE", f"/api-keys/{revoked['id']}", token=user_token)
    expect(openai.AuthenticationError, lambda: client(revoked["key"]).models.list(), "a revoked key")
    expired = new_key(user_token, expires_in_days=1)
    expire(expired["prefix"])
    expect(openai.AuthenticationError, lambda: client(expired["key"]).models.list(), "an expired key")
    expect(openai.NotFoundError, lambda: sdk.chat.completions.create(model="nope:1b", messages=asked), "an unknown model")
    narrowed = client(new_key(user_token, models=["qwen3:0.6b"])["key"])
    expect(openai.PermissionDeniedError, lambda: narrowed.chat.completions.create(model="llama3.2:1b", messages=asked), "a model outside the key's list")
    expect(openai.BadRequestError, lambda: sdk.chat.completions.create(model="llama3.2:1b", messages=[]), "an invalid request")

    limited = client(new_key(user_token)["key"])
    limit = int(os.environ.get("KEY_LIMIT", "20"))
    for _ in range(limit):
        limited.models.list()
    expect(openai.RateLimitError, lambda: limited.models.list(), "over the key's rate limit")

    _, other_token = sign_up("conformance_leaver")
    leaver = client(new_key(other_token)["key"])
    leaver.models.list()
    other = call("GET", "/users/me", token=other_token)
    call("PUT", f"/users/{other['id']}", {"is_active": False}, admin_token)
    expect(openai.AuthenticationError, lambda: leaver.models.list(), "a deactivated owner")
    print("all OpenAI SDK conformance checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as err:
        print(f"FAIL: {err}", file=sys.stderr)
        sys.exit(1)
