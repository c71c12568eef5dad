"""config.yaml (LiteLLM's format, plus ``user_id_mappings`` and ``memproxy:``) into frozen settings: loading,
validation with key paths, and the exposure checks a start and every reload pass."""
