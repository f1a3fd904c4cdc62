"""The server's own tokenizer, found by probing its tokenize endpoints; else a characters / 4 estimate.

vLLM, SGLang and llama.cpp's llama-server answer /tokenize (beside /v1), each with its own body;
llama-cpp-python's server answers /extras/tokenize and always adds BOS, which is cut off again.
Token counts keep prompts inside the context window, and label lengths decide echo vs top-k.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Optional, Union

from ..foundation.errors import BackendError
from .openai_logprobs import Malformed
from .openai_transport import Cancelled, Rejected, Transport

STYLES = ("vllm", "llamacpp", "llamacpp-python")
# Texts whose counts are kept: the pieces requests share (a core's demonstrations, labels) and
# what a run counts to plan (its core, a sample). Rows are not counted one by one.
COUNT_CACHE = 100_000
Tokens = Union[list[int], int]  # the ids, or only their count when that is all the server gives


class ServerTokenizer:
    def __init__(self, transport: Transport, model: Callable[[], str], rejection: Callable[[Rejected], Exception],
                 log: Callable[[str], None]):
        self._transport = transport
        self._model = model  # the served name, which connect() may fill in after construction
        self._rejection = rejection
        self._log = log
        self._lock = threading.Lock()
        self.style: Optional[str] = None  # one of STYLES or "none", found on first use
        self.estimated = False  # no tokenize endpoint: counts are characters / 4
        self._added: list[int] = []  # tokens the endpoint adds to every text (BOS)
        self._counts: OrderedDict[str, int] = OrderedDict()

    def _url(self, base: str) -> str:
        return base.removesuffix("/v1") + "/tokenize"

    def _extras_url(self, base: str) -> str:
        return base.removesuffix("/v1") + "/extras/tokenize"

    def _tokenize(self, text: str, style: str) -> Tokens:
        url_for = self._url
        if style == "vllm":
            payload: dict[str, Any] = {"model": self._model(), "prompt": text, "add_special_tokens": False}
        elif style == "llamacpp":
            payload = {"content": text, "add_special": False}
        else:  # "llamacpp-python": always adds BOS; self._added (what it returns for "") is cut off below
            payload, url_for = {"input": text}, self._extras_url
        url, data = self._transport.request(url_for, payload)
        tokens, count = data.get("tokens"), data.get("count")
        if isinstance(tokens, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            added = self._added if style == "llamacpp-python" else []
            return tokens[len(added):] if added and tokens[: len(added)] == added else tokens
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        raise Malformed(f"{url}: no 'tokens' list or 'count' in the /tokenize response")

    def find(self, sample: str) -> str:
        """The tokenize dialect the server speaks, probed once with `sample`."""
        with self._lock:
            if self.style is not None:
                return self.style
        found = "none"
        for style in STYLES:
            try:
                result = self._tokenize(sample, style)
            except (Rejected, Malformed):
                continue  # not this server's dialect (outages still raise: they are not "no endpoint")
            except BackendError as e:
                if style != "llamacpp-python" or isinstance(e, Cancelled):
                    raise
                # The server answered the two probes before; one that chokes on this path is not
                # llama-cpp-python's (an outage shows on the next request anyway).
                continue
            # llama.cpp answers a vLLM-shaped body with an empty list: that is not a tokenizer.
            if (isinstance(result, list) and result) or (isinstance(result, int) and result > 0):
                found = style
                break
        if found == "llamacpp-python":
            added = self._tokenize("", found)  # only what the server adds itself (BOS)
            self._added = added if isinstance(added, list) else []
        if found == "none":
            self.estimated = True
            self._log("openai backend: the server has no tokenize endpoint; token counts are estimated as characters / 4")
        with self._lock:
            self.style = found
        return found

    def ids(self, text: str) -> Optional[Tokens]:
        """The server's tokens for `text` (or their count); None when there is no tokenizer."""
        if self.find(text or " ") == "none":
            return None
        try:
            return self._tokenize(text, self.style)  # type: ignore[arg-type]
        except Rejected as e:
            raise self._rejection(e) from None
        except Malformed as e:
            raise BackendError(f"malformed response ({e})") from None

    def known(self, text: str) -> bool:
        return text in self._counts

    def count(self, text: str) -> int:
        cached = self._counts.get(text)
        if cached is not None:
            return cached
        if not text:
            return 0
        result = self.ids(text)
        n = max(1, round(len(text) / 4)) if result is None else (len(result) if isinstance(result, list) else result)
        self._counts[text] = n
        if len(self._counts) > COUNT_CACHE:
            self._counts.popitem(last=False)  # the oldest: the core's demonstrations stay in use
        else:
            self._counts.move_to_end(text)
        return n

    def label_lengths(self, context: str, labels: list[str]) -> Optional[list[int]]:
        """Tokens each label adds after `context`, as the server tokenizes it; None without a tokenizer."""
        base = self.ids(context)
        if base is None:
            return None
        out = []
        for c in labels:
            joint = self.ids(context + c)
            if isinstance(base, list) and isinstance(joint, list):
                common = next((k for k, (a, b) in enumerate(zip(base, joint)) if a != b), min(len(base), len(joint)))
                out.append(len(joint) - common)
            else:
                out.append((len(joint) if isinstance(joint, list) else int(joint or 0))
                           - (len(base) if isinstance(base, list) else base))
        return out
