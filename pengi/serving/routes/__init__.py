"""The app's routes, one module per API: `info` (page, health, metrics, models), `chat` (OpenAI chat completions),
`generate` (pengi's /v1/generate), `clap` (classification and embeddings). Each ``router(server)`` returns a FastAPI
router whose handlers share the app's `Server`."""
