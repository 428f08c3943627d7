"""Operations: metrics, the console, retention."""
