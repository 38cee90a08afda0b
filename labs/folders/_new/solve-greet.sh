echo hello > "$GREETING_FILE"
