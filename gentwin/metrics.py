"""The measured quantities of the reproduction: eq. (9) L1 and accuracy, eq. (10) retrieval, completeness, response gap, pooling gain."""
from __future__ import annotations

# Sections (one owner each while the library is restructured; keep these markers):
# --- eq. (9): L1 and accuracy over relations; the pooling gain (Fig. 6) ---
# --- eq. (10): retrieval recall@k ---
# --- Fig. 8: response gap ---
# --- Table IV: completeness ---
