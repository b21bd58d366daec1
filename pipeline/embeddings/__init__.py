"""Text embeddings, a service of semdedup, select and refresh (a sibling of pipeline/teacher/).

    encoder.py    EmbeddingSection (the shared config keys), make_encoder, text_of / texts_at
    embedder.py   the full sentence-transformers model and the fast static one distilled from it
    cache.py      the on-disk embedding cache keyed by (embedder, text hash)
    store.py      vectors stored next to a dataset (<dataset>/_embeddings/), and found upstream
    neighbors.py  similarity to a growing selected set (exact, then FAISS IVF): select's diversity

Importing the package loads no model and no torch.
"""
