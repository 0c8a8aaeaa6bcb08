"""Official clients against a hearth that wants API keys (HEARTH_URL, started
by scripts/test-clients.sh with HEARTH_API_KEYS=$ADMIN_KEY and
HEARTH_INFERENCE_KEYS=$INFERENCE_KEY): the `ollama` package with and without
OLLAMA_API_KEY, and the `openai` package with the inference key and a wrong
one. Prints one line per check and a closing "N passed, N failed".
"""

import hashlib
import importlib
import os

import anthropic
import openai

from checks import Checks

URL = os.environ["HEARTH_URL"]
ADMIN = os.environ["ADMIN_KEY"]
INFERENCE = os.environ["INFERENCE_KEY"]
MODELS = os.environ.get("HEARTH_TEST_MODELS", os.path.expanduser("~/.cache/hearth/models"))
GEMMA = os.path.join(MODELS, "gemma3-270m-q4_k_m.gguf")

checks = Checks()


def ollama_client(key):
    """A client made as a user makes one: the key comes from OLLAMA_API_KEY."""
    if key is None:
        os.environ.pop("OLLAMA_API_KEY", None)
    else:
        os.environ["OLLAMA_API_KEY"] = key
    import ollama

    importlib.reload(ollama)
    return ollama, ollama.Client(host=URL)


def without_key_is_refused():
    ollama, c = ollama_client(None)
    try:
        c.list()
    except ollama.ResponseError as e:
        assert e.status_code == 401, e
        return
    raise AssertionError("listing without a key worked")


def admin_key_creates():
    _, c = ollama_client(ADMIN)
    h = hashlib.sha256()
    with open(GEMMA, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    c.create_blob(GEMMA)
    done = c.create(model="gemma3:270m", files={"gemma.gguf": "sha256:" + h.hexdigest()})
    assert done.status == "success", done
    assert [m.model for m in c.list().models] == ["gemma3:270m"]


def inference_key_runs_but_cannot_delete():
    ollama, c = ollama_client(INFERENCE)
    r = c.generate(model="gemma3:270m", prompt="Hi", options={"num_predict": 2})
    assert r.done, r
    try:
        c.delete("gemma3:270m")
    except ollama.ResponseError as e:
        assert e.status_code == 403, e
        return
    raise AssertionError("an inference key deleted a model")


def openai_with_inference_key():
    oai = openai.OpenAI(base_url=URL + "/v1", api_key=INFERENCE)
    assert [m.id for m in oai.models.list().data] == ["gemma3:270m"]
    r = oai.chat.completions.create(model="gemma3:270m", max_tokens=2,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.role == "assistant", r


def openai_with_wrong_key():
    oai = openai.OpenAI(base_url=URL + "/v1", api_key="not-a-key")
    try:
        oai.models.list()
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
        return
    raise AssertionError("a wrong key listed models")


def anthropic_keys():
    ok = anthropic.Anthropic(base_url=URL, api_key=INFERENCE)
    m = ok.messages.create(model="gemma3:270m", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert m.role == "assistant", m
    bad = anthropic.Anthropic(base_url=URL, api_key="not-a-key")
    try:
        bad.messages.create(model="gemma3:270m", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    except anthropic.AuthenticationError as e:
        assert e.body["error"]["type"] == "authentication_error", e.body
        return
    raise AssertionError("a wrong key was accepted on /v1/messages")


for name, fn in [
    ("ollama: no key is 401", without_key_is_refused),
    ("ollama: admin key creates", admin_key_creates),
    ("ollama: inference key runs, delete is 403", inference_key_runs_but_cannot_delete),
    ("openai: inference key chats and lists", openai_with_inference_key),
    ("openai: wrong key is AuthenticationError", openai_with_wrong_key),
    ("anthropic: inference key works, wrong key is AuthenticationError", anthropic_keys),
]:
    checks.run(name, fn)
checks.finish("python clients with API keys")
