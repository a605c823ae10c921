"""Customer segmentation: segments from behaviour, RFM and holdings, published to Feast.

``features`` (the matrix) → ``selection`` (k by silhouette and bootstrap stability, BIC
reported) → ``fit`` (per customer type: log1p, standardise, PCA, k-means) → ``stability``
(bootstrap ARI) → ``profile`` (traits, products, apps, names) → ``publish`` (the
``customer_segment`` view, materialised online) → ``report``; ``pipeline`` runs them in order.
"""
