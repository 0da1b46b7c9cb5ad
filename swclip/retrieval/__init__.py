"""Retrieval: from image embeddings to places (galleries, faiss search, knn-kde estimate)."""
