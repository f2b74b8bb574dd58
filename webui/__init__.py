"""The server process: FastAPI with the REST and OpenAI APIs, and the Gradio UI mounted at /."""
