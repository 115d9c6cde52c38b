"""The OpenAI-compatible HTTP gateway (Starlette) in front of Triton, with optional API keys: a server package.

    from tritonforge.gateway import GatewayModels, create_app

    app = create_app("127.0.0.1:8001", api_keys=["sk-local"], models=GatewayModels())
    # uvicorn.run(app, host="127.0.0.1", port=9000)   or:  tritonforge gateway --triton 127.0.0.1:8001 --port 9000

Routes (OpenAI's request and response shapes; errors are ``{"error": {"message", "type", "param", "code"}}``):

  POST /v1/chat/completions   messages -> the ``llm`` ensemble; ``stream: true`` -> server-sent events ending with
                              ``data: [DONE]``. The conversation goes whole to the ensemble's ``chat_messages`` input
                              (JSON; ``developer`` sent as ``system``), which the checkpoint's chat template renders
                              turn by turn, as transformers' ``apply_chat_template`` does. An ensemble without that
                              input (built before tritonforge added it) gets the conversation flattened into ONE user
                              message, each turn on its own paragraph as ``"<Role>: <text>"``, with
                              ``apply_chat_template``.
  POST /v1/completions        a raw prompt, or a list of them (no chat template) -> the ``llm`` ensemble; ``stream``
                              as above.
  POST /v1/embeddings         input (string or list of strings) -> the ``embed`` ensemble; ``encoding_format``
                              float or base64; usage.prompt_tokens is the sum of the ensemble's NUM_TOKENS output
                              (0 when the ensemble has none).
  POST /v1/rerank             Cohere/Jina-style ``{model, query, documents, top_n, return_documents}`` -> the
                              ``rerank`` ensemble; results sorted by relevance_score, each with its ``index``.
  GET  /v1/models[/{id}]      the configured model ids, every LoRA adapter of a chat model as a model of its own
                              (``"parent"``: the chat id; as vLLM lists them — call it by that id to use the adapter;
                              read from the ensemble's ``lora_adapters`` config parameter), and the split names
                              (``"kind"``, ``"split": true``).
  GET  /health                200 when every model the gateway serves can answer, else 503 naming what is down
                              (Triton's readiness reported; no key needed; HEAD too).
  GET  /metrics               Prometheus text: requests and latency per route, model and status; per split arm
                              requests, errors and latency; each split's tripped state and current shares.
  GET  /admin/splits          the splits, their arms' counters and guard state (admin key).
  PUT  /admin/splits          replace the split configuration (``{"splits": {...}}``, admin key); refused with
                              400 and every problem when it is invalid (the previous one keeps serving).
  POST /admin/splits/{name}/reset   clear a split's tripped guard (admin key).

A/B and canary splits (:mod:`tritonforge.gateway.splits`): a split name is a model id; each request to it
goes to one arm (a configured model id, optionally a Triton version and a LoRA adapter) and the response carries
``x-tritonforge-split`` and ``x-tritonforge-arm``; the body's ``model`` stays the name the client sent. Sticky
splits hash the request's OpenAI ``user`` field, else the caller's API key. Admin endpoints need a key from
``admin_keys``; with no admin keys they are open only when the gateway itself has no API keys (else 403).

Generation: ``max_tokens`` (or ``max_completion_tokens``) defaults to 64 for chat and 16 for completions (OpenAI's
completions default; ``GatewayModels.chat_max_tokens`` / ``completion_max_tokens``, ``--chat-max-tokens``);
``temperature``, ``top_p``, ``seed``, ``stop`` and the extension ``top_k`` are passed on; without
``temperature``/``top_p``/``top_k`` the engine decodes greedily (TensorRT-LLM's default). Greedy or sampled
is decided by the LLM API's rule on every runtime: a sampled request goes out with a top_p (1.0 if none was sent:
the engine contract would decode a temperature alone greedily) and a seed (a fresh random one if none was sent:
TensorRT-LLM seeds an unseeded request with 0, so every "sample" of a prompt would be the same). ``n`` > 1 runs n
generations at once, choice i seeded with seed + i; a completions ``prompt`` may be a list, each prompt getting
its n choices (prompts x n at most ``GatewayLimits.generations``, 16). ``stop`` ends the text before the first stop
string on every runtime (the engine contract keeps the stop word it matched: the gateway cuts there,
:class:`~tritonforge.gateway.generation.StopScanner`). ``presence_penalty`` and ``frequency_penalty`` are passed on
(TensorRT-LLM counts the prompt's tokens too, where OpenAI and vLLM count the output's). ``logprobs``, ``echo``
and tools are refused with 400. Token counts: ``usage`` carries the engine's own
``num_input_tokens`` / ``num_output_tokens`` (the ensemble's ``return_num_*_tokens`` inputs, when its config has them);
with an older ensemble, ``completion_tokens`` counts the streamed engine responses and ``prompt_tokens`` is 0.

Stopping: when an HTTP client goes away during a stream, the gRPC stream to Triton is cancelled and, because Triton
2.51 does not pass an ensemble's cancellation on to its steps, upstream's ``stop`` signal (same request id) is sent
to the engine model, as the sync client's ``stream()`` does.

Errors: unknown model 404, bad JSON / wrong types / unsupported parameters 400, missing or wrong key 401, Triton
unavailable or overloaded 503, deadline 504; a request Triton rejects (prompt too long, ...) 400.
The package: :mod:`.app` (create_app: the Starlette app, its lifespan and error handling), :mod:`.state` (the
gateway's state: the Triton connection, models, adapters, routing to models and split arms), :mod:`.routes` (the
endpoints), :mod:`.schemas` (request bodies and limits), :mod:`.generation` (chat/completions, streamed as SSE),
:mod:`.embeddings` (an embeddings request's Triton requests, a bounded number in flight),
:mod:`.errors` (APIError, the OpenAI error body), :mod:`.models`, :mod:`.auth`, :mod:`.splits`, :mod:`.metrics`.
"""

from tritonforge.gateway.app import create_app
from tritonforge.gateway.errors import APIError
from tritonforge.gateway.generation import flatten_messages
from tritonforge.gateway.models import GatewayModels, split_problems
from tritonforge.gateway.schemas import GatewayLimits

__all__ = ["APIError", "GatewayLimits", "GatewayModels", "create_app", "flatten_messages", "split_problems"]
