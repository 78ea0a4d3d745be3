"""The only code that touches the OS. Everything here turns OS errors into hostchaos errors."""
