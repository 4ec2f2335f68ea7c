"""``mmcascade`` console script."""

from __future__ import annotations

from pathlib import Path

import typer

from mmcascade import __version__

app = typer.Typer(
    name="mmcascade",
    help="Reasoning-augmented multimodal retrieval: embed, index, search, rerank.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_subcommands() -> None:
    from mmcascade.cli import index, mine, reasoner, serve, train

    app.command("mine")(mine.mine_command)
    app.add_typer(index.app, name="index")
    app.add_typer(reasoner.app, name="reasoner")
    app.add_typer(train.app, name="train")
    app.add_typer(serve.app, name="serve")


@app.callback()
def main() -> None:
    """Reasoning-augmented multimodal retrieval."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # rich shows our own progress; no weight-loading bars


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


@app.command()
def quickstart(
    model: str = typer.Option(
        None,
        help="Embedder or VLM checkpoint (folder or Hub id). Default: the starter model (a tiny random Qwen2-VL if it is not built).",
    ),
    workdir: Path = typer.Option(None, help="Where the tiny checkpoint is built (default: a temporary folder)."),
    tiny: bool = typer.Option(False, help="Use a tiny random Qwen2-VL even when the starter model is available."),
) -> None:
    """Embed a few captions and images and score them with MaxSim at several budgets."""
    from mmcascade.cli.quickstart import run_quickstart

    run_quickstart(model, workdir, tiny)


@app.command()
def embed(
    model: str = typer.Option(..., help="Embedder folder, VLM folder or Hub id."),
    text: str = typer.Option(None, help="Text of the item."),
    image: Path = typer.Option(None, help="Image file of the item.", exists=False),
    instruction: str = typer.Option(None, help="Task instruction."),
    side: str = typer.Option("query", help="query or document."),
    budget: int = typer.Option(None, help="Keep the first k vectors (multi-vector heads)."),
    output: Path = typer.Option(None, help="Write the vectors to this .safetensors file."),
) -> None:
    """Encode one item and print (or save) its vectors."""
    from mmcascade.cli.embed import run_embed
    from mmcascade.cli.errors import exit_on_user_error

    with exit_on_user_error():
        run_embed(model, text, image, instruction, side, budget, output)


@app.command()
def search(
    name: str = typer.Argument(..., help="Index name."),
    text: str = typer.Option(None, help="Query text."),
    image: Path = typer.Option(None, help="Query image file."),
    instruction: str = typer.Option(None, help="Query instruction (default: the one stored in the index)."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Results to return."),
    query_budget: int = typer.Option(None, help="Query vectors to score with (default: all)."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='Print a JSON list of {"id", "score", "rank", "payload"}; with --rerank also "retrieval_rank", '
        '"rerank_score" (P(yes)) and "reasoning".',
    ),
    model: str = typer.Option(None, help="Refuse to search unless the index was built with this model."),
    data_dir: Path = typer.Option(None, help="Where indexes live (default: $MMCASCADE_DATA_DIR or the user cache)."),
    think: bool = typer.Option(
        False, "--think", help="Think-Then-Embed: a reasoner writes a trace the query is embedded with."
    ),
    reasoner: str = typer.Option(
        None, help="Reasoner: a local VLM folder / Hub id, or the served model with --reasoner-url."
    ),
    reasoner_url: str = typer.Option(None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1."),
    think_tokens: int = typer.Option(
        None,
        min=0,
        help="Reasoning token budget: of the query reasoner with --think (default 256) and of the reranker per "
        "candidate with --rerank (default 0: judge without reasoning).",
    ),
    task: str = typer.Option("retrieval", help="Prompt kind: retrieval, classification, vqa, grounding, document."),
    rerank: int = typer.Option(
        0, min=0, help="Rerank the first K hits with a reasoning reranker (the cascade); 0: retrieval only."
    ),
    retrieve_k: int = typer.Option(None, min=1, help="Hits retrieved before reranking (default: max(top-k, rerank))."),
    reranker: str = typer.Option(
        None, help="Reranker: a generative VLM folder / Hub id, 'starter' (default for starter indexes)."
    ),
    reranker_url: str = typer.Option(None, help="OpenAI-compatible server serving --reranker (logprobs needed)."),
) -> None:
    """Search index NAME by text, image, or both; --rerank k reranks the top k with a reasoning reranker."""
    from mmcascade.cli.errors import exit_on_user_error
    from mmcascade.cli.search import run_search

    with exit_on_user_error():
        run_search(
            name,
            text=text,
            image=image,
            instruction=instruction,
            top_k=top_k,
            query_budget=query_budget,
            as_json=as_json,
            model=model,
            data_dir=data_dir,
            think=think,
            reasoner=reasoner,
            reasoner_url=reasoner_url,
            think_tokens=think_tokens,
            task=task,
            rerank=rerank,
            retrieve_k=retrieve_k,
            reranker=reranker,
            reranker_url=reranker_url,
        )


@app.command()
def demo(
    data_dir: Path = typer.Option(
        None, help="Where the demo index is kept (default: $MMCASCADE_DATA_DIR or the user cache)."
    ),
    backend: str = typer.Option("qdrant-edge", help="Index backend."),
) -> None:
    """The main job in one command: index the bundled demo collection with the starter model and search it."""
    from mmcascade.cli.demo import run_demo
    from mmcascade.cli.errors import exit_on_user_error

    with exit_on_user_error():
        run_demo(data_dir=data_dir, backend=backend)


@app.command("eval")
def evaluate(
    config: Path = typer.Argument(None, help="Eval yaml in VLM2Vec's format (default: the bundled mini benchmark)."),
    model: str = typer.Option("starter", help="Embedder folder, Hub id, or 'starter'."),
    out: Path = typer.Option(None, help="Output folder (default: eval-results/<model name>)."),
    budgets: str = typer.Option(None, help="Budgets as QxD pairs, e.g. 1x1,2x4,4x8,8x16,16x64 (default: those)."),
    datasets: str = typer.Option(None, help="Comma-separated dataset names (default: all in the config)."),
    ties: str = typer.Option("pessimistic", help="pessimistic (default), optimistic or random."),
    data_root: Path = typer.Option(None, help="Root of the config's relative paths (default: the config's folder)."),
    batch_size: int = typer.Option(16, min=1, help="Items encoded per batch."),
    seed: int = typer.Option(0, help="Seed of random tie breaking."),
    think: bool = typer.Option(False, "--think", help="Think-Then-Embed: embed each query with a reasoner's trace."),
    reasoner: str = typer.Option(
        None, help="Reasoner: a local VLM folder / Hub id, or the served model with --reasoner-url."
    ),
    reasoner_url: str = typer.Option(None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1."),
    think_tokens: int = typer.Option(
        None,
        min=0,
        help="Reasoning token budget: of the query reasoner with --think (default 256) and of the reranker per "
        "candidate with --rerank (default 0).",
    ),
    rerank: int = typer.Option(0, min=0, help="Rerank each query's top K candidates (the cascade); 0: off."),
    reranker: str = typer.Option(None, help="Reranker: generative VLM folder / Hub id ('starter' for the starter)."),
    reranker_url: str = typer.Option(None, help="OpenAI-compatible server serving --reranker (logprobs needed)."),
) -> None:
    """Evaluate a model on MMEB-V2-format datasets at several budgets; resumable, cached, reported."""
    from mmcascade.cli.errors import exit_on_user_error
    from mmcascade.cli.evaluate import run_eval_command

    with exit_on_user_error():
        run_eval_command(
            config,
            model=model,
            out=out,
            budgets=budgets,
            datasets=datasets,
            ties=ties,
            data_root=data_root,
            batch_size=batch_size,
            seed=seed,
            think=think,
            reasoner=reasoner,
            reasoner_url=reasoner_url,
            think_tokens=think_tokens,
            rerank=rerank,
            reranker=reranker,
            reranker_url=reranker_url,
        )


_register_subcommands()

if __name__ == "__main__":
    app()
