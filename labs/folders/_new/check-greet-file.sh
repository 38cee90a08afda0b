[ -f "$GREETING_FILE" ] || { echo "no file $GREETING_FILE"; exit 1; }
grep -q hello "$GREETING_FILE" || { echo "$GREETING_FILE does not say hello"; exit 1; }
echo "$GREETING_FILE says hello"
