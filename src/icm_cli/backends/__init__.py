"""Floor 3 (backends): the model, behind one narrow interface.

`base.Backend` (score, count_tokens, forget, close; name, identity, stats) is all the floors
above see. `registry` answers every question about a backend type. `hf` (transformers and torch
in this process, with its packed prefix walk: `piece_attention`, `prefix_tree`, `kv_store`,
`fixed_rows`, `pieces`; on a GPU `tree_attention`, `tree_calls`), `vllm_backend`,
`openai_server` (with `openai_completions`, `openai_transport`, `openai_retry`, `openai_key`,
`openai_logprobs`, `openai_tokenizer`); `embedded` (the shipped Gemma), `cpu_dtype`, `models`
(where a model loads from, its identity), `tokens` (a tokenizer alone), `loading`.

May import: foundation and data.
"""
