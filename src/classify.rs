//! Statement classification (placeholder; being written).
