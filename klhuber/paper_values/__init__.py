"""Values printed in the paper and its companion documents, for side-by-side display and tests only."""
