"""Customer segmentation (issue 6)."""
