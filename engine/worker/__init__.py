"""The GPU side: model loading, the pipeline runner, batches with out-of-memory splitting, and finishing each image.

The only code in the project that imports torch or diffusers. Producers never import it directly: they talk to
a `JobQueue` (engine/api.py); the in-process implementation (engine/local.py) drives a `BatchWorker` from here.
"""
