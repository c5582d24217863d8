"""``python -m tests.pipecat_bot --port P --stats-port Q --origin http://127.0.0.1:R``."""

from tests.pipecat_bot.bot import main

if __name__ == "__main__":
    main()
