"""Floor 4 (algorithm): Internal Coherence Maximization itself, as pure logic.

It knows nothing of files, terminals or model servers: a backend is a `Backend` it is handed.
The search (Algorithm 1 and ConsistencyFix: `search`, its vocabulary in `search_types`, its
course kept for the summary in `search_trace`), exact repair of a consistency group
(`consistency`), the prompts of a U evaluation (`scoring`), rows into examples and back
(`tasks`), which rows a core holds (`cores`), how a core is labelled (`core_labels`), many-shot
transfer in chunks (`transfer`), class shares estimated without gold (`class_prior`).

May import: foundation, data (its row types only) and backends (the `Backend` interface).
"""
