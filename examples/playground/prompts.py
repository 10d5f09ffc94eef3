"""The playground's system prompts: from the project's MLflow prompt registry when `mlflow` is
installed and Loom's tracking is reachable, else a default kept here (and the apps say so)."""
import os

DEFAULT_PROMPT = "You are a helpful assistant. Answer briefly."
# The registry's name for the playground's system prompt; PROMPT_NAME overrides it.
PROMPT_NAME = os.environ.get("PROMPT_NAME", "playground-system")


def load_system_prompt(ref=None):
    """(text, source): the prompt at `ref` ("@alias" or "/version"; PROMPT_REF, default "@champion")
    from the registry, or the default with the reason it was used."""
    ref = ref or os.environ.get("PROMPT_REF", "@champion")
    try:
        import mlflow  # optional: the apps run without it
    except ImportError:
        return DEFAULT_PROMPT, "default prompt (mlflow is not installed)"
    uri = f"prompts:/{PROMPT_NAME}{ref}"
    try:
        prompt = mlflow.genai.load_prompt(uri)
    except Exception as err:  # no registry, no such prompt: the app still works
        return DEFAULT_PROMPT, f"default prompt ({uri} could not be loaded: {type(err).__name__})"
    return prompt.template, f"{uri} (version {prompt.version})"
