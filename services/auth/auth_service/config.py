"""Auth settings on top of the shared ones (see ``webchat_common.config``)."""
from webchat_common import Config, TestConfig


class AuthConfig(Config):
    #: werkzeug ``generate_password_hash`` method: scrypt, 32 MiB of memory per hash.
    PASSWORD_HASH_METHOD = "scrypt:32768:8:1"
    #: Failed logins allowed per account and per client address within the window.
    LOGIN_MAX_FAILURES_PER_USER = 10
    LOGIN_MAX_FAILURES_PER_IP = 50
    LOGIN_THROTTLE_WINDOW = 15 * 60


class AuthTestConfig(TestConfig, AuthConfig):
    PASSWORD_HASH_METHOD = "scrypt:1024:8:1"  # fast for tests; same code path
    LOGIN_MAX_FAILURES_PER_USER = 5
    LOGIN_MAX_FAILURES_PER_IP = 20
