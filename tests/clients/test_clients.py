"""Official client libraries against a running hearth: the `ollama` package
on the native API, the `openai` package on /v1 and the `anthropic` package
on /v1/messages.

Run by scripts/test-clients.sh, which starts the server (HEARTH_URL) with an
empty store. Prints one line per check and a closing "N passed, N failed".
"""

import hashlib
import os

import anthropic
import ollama
import openai

from checks import Checks

URL = os.environ["HEARTH_URL"]
MODELS = os.environ.get("HEARTH_TEST_MODELS", os.path.expanduser("~/.cache/hearth/models"))
GEMMA = os.path.join(MODELS, "gemma3-270m-q4_k_m.gguf")
TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

checks = Checks()


client = ollama.Client(host=URL)
oai = openai.OpenAI(base_url=URL + "/v1", api_key="ollama")
ant = anthropic.Anthropic(base_url=URL, api_key="ollama")


def create():
    h = hashlib.sha256()
    with open(GEMMA, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    client.create_blob(GEMMA)
    statuses = [p.status for p in client.create(model="gemma3:270m", files={"gemma.gguf": digest},
                                                template=TEMPLATE, parameters={"stop": ["<end_of_turn>"]}, stream=True)]
    assert statuses[-1] == "success", statuses


def listing():
    names = [m.model for m in client.list().models]
    assert "gemma3:270m" in names, names
    info = client.show("gemma3:270m")
    assert info.details.family == "gemma3", info.details
    assert "completion" in info.capabilities


def chat():
    r = client.chat(model="gemma3:270m", messages=[{"role": "user", "content": "Say hello."}],
                    options={"num_predict": 8, "seed": 1})
    assert r.message.role == "assistant" and r.message.content, r
    assert r.done and r.eval_count and r.eval_count <= 8, r


def chat_stream():
    parts = list(client.chat(model="gemma3:270m", messages=[{"role": "user", "content": "Count to three."}],
                             options={"num_predict": 8}, stream=True))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length"), parts[-1]
    assert "".join(p.message.content for p in parts).strip()


def generate():
    r = client.generate(model="gemma3:270m", prompt="The sky is", options={"num_predict": 5, "temperature": 0})
    assert r.response and r.context, r


def logprobs():
    parts = list(client.generate(model="gemma3:270m", prompt="The sky is", stream=True, logprobs=True,
                                 top_logprobs=2, options={"num_predict": 4, "temperature": 0}))
    lps = [lp for p in parts for lp in (p.logprobs or [])]
    assert len(lps) == 4, parts
    assert all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in lps), lps
    chunks = list(oai.chat.completions.create(model="gemma3:270m", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=3, stream=True, logprobs=True, top_logprobs=1))
    content = [lp for c in chunks if c.choices and c.choices[0].logprobs
               for lp in (c.choices[0].logprobs.content or [])]
    assert len(content) == 3, chunks


def ps():
    models = client.ps().models
    assert models and models[0].model == "gemma3:270m", models


def structured():
    r = client.chat(model="gemma3:270m", messages=[{"role": "user", "content": "A cat as JSON."}],
                    format={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                    options={"temperature": 0, "num_predict": 60})
    import json
    assert "name" in json.loads(r.message.content), r.message.content


def errors():
    try:
        client.chat(model="ghost", messages=[{"role": "user", "content": "x"}])
    except ollama.ResponseError as e:
        assert e.status_code == 404, e
        return
    raise AssertionError("no error for an unknown model")


def openai_chat():
    r = oai.chat.completions.create(model="gemma3:270m", messages=[{"role": "user", "content": "Say hi."}],
                                    max_tokens=8, seed=1)
    assert r.choices[0].message.content, r
    assert r.usage.completion_tokens <= 8, r.usage


def openai_stream():
    chunks = list(oai.chat.completions.create(model="gemma3:270m", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=6, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, chunks
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens <= 6, chunks[-1]


def openai_models():
    ids = [m.id for m in oai.models.list().data]
    assert "gemma3:270m" in ids, ids
    assert oai.models.retrieve("gemma3:270m").id == "gemma3:270m"


def openai_errors():
    try:
        oai.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError:
        return
    raise AssertionError("no NotFoundError")


def anthropic_messages():
    m = ant.messages.create(model="gemma3:270m", max_tokens=8, system="You are terse.",
                            messages=[{"role": "user", "content": "Name a color."}])
    assert m.type == "message" and m.role == "assistant", m
    assert m.content and m.content[0].type == "text", m
    assert m.stop_reason in ("end_turn", "max_tokens"), m.stop_reason
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage


def anthropic_stream():
    kinds, text = [], ""
    with ant.messages.stream(model="gemma3:270m", max_tokens=8,
                             messages=[{"role": "user", "content": "Name a color."}]) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    text = "".join(b.text for b in final.content if b.type == "text")
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert "content_block_start" in kinds and "message_delta" in kinds, kinds
    assert text and final.usage.output_tokens > 0, final


TOOLS_TEMPLATE = """{{- if .Tools }}<start_of_turn>user
You can call these functions by answering with JSON {"name": ..., "arguments": {...}}:
{{ range .Tools }}{{ .Function.Name }}: {{ .Function.Description }}
{{ end }}<end_of_turn>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ else if eq .Role "tool" }}<start_of_turn>user
Result: {{ .Content }}<end_of_turn>
<start_of_turn>model
{{ end }}
{{- end }}"""


def anthropic_tools_and_tokens():
    client.create(model="gemma-tools", from_="gemma3:270m", template=TOOLS_TEMPLATE)
    tools = [{"name": "get_weather", "description": "Weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    # A few-shot turn with a tool call and its result goes back in.
    m = ant.messages.create(model="gemma-tools", max_tokens=8, tools=tools, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}]}])
    assert m.stop_reason in ("end_turn", "max_tokens", "tool_use"), m
    n = ant.messages.count_tokens(model="gemma3:270m", messages=[{"role": "user", "content": "Hello there"}])
    assert n.input_tokens > 2, n


def anthropic_errors():
    try:
        ant.messages.create(model="ghost", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    except anthropic.NotFoundError as e:
        assert e.body["error"]["type"] == "not_found_error", e.body
        return
    raise AssertionError("no NotFoundError")


def delete():
    client.copy("gemma3:270m", "copy:1")
    client.delete("copy:1")
    assert "copy:1" not in [m.model for m in client.list().models]


for name, fn in [("create with blobs", create), ("list and show", listing), ("chat", chat),
                 ("chat stream", chat_stream), ("generate", generate), ("ps", ps),
                 ("structured output", structured), ("errors", errors), ("openai chat", openai_chat),
                 ("openai stream", openai_stream), ("logprobs", logprobs), ("openai models", openai_models),
                 ("openai errors", openai_errors), ("anthropic messages", anthropic_messages),
                 ("anthropic stream", anthropic_stream), ("anthropic tools and count_tokens", anthropic_tools_and_tokens),
                 ("anthropic errors", anthropic_errors), ("copy and delete", delete)]:
    checks.run(name, fn)

checks.finish("python clients")
