import pytest
from django.core.exceptions import ValidationError

from connections.validators import validate_base_url

ALWAYS_REFUSED = [
    "ftp://api.example.com/v1",
    "file:///etc/passwd",
    "gopher://example.com",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.10.20:8080/v1",
    "http://[fd00:ec2::254]/latest/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://user:password@api.example.com/v1",
    "https://sk-secret@api.example.com/v1",
    "http:///v1",
]
PRIVATE = [
    "http://10.0.0.5:8000/v1",
    "http://192.168.1.20/v1",
    "http://172.16.3.4/v1",
    "http://127.0.0.1:8001/v1",
    "http://localhost:11434/v1",
    "http://[::1]:8000/v1",
]


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_schemes_metadata_link_local_and_credentials_are_always_refused(url, allow_private):
    with pytest.raises(ValidationError):
        validate_base_url(url, allow_private=allow_private)


@pytest.mark.parametrize("url", PRIVATE)
def test_private_and_loopback_addresses_are_refused_by_default(url, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = False
    with pytest.raises(ValidationError) as info:
        validate_base_url(url)
    assert info.value.code == "private"


@pytest.mark.parametrize("url", PRIVATE)
def test_private_and_loopback_addresses_are_allowed_when_the_setting_is_on(url, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True
    validate_base_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://api.openai.com/v1", "http://93.184.215.14:8000/v1", "https://[2606:4700::1]/v1"],
)
def test_public_http_and_https_addresses_are_accepted(url, settings):
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = False
    validate_base_url(url)


def test_the_metadata_refusal_message_does_not_echo_credentials():
    with pytest.raises(ValidationError) as info:
        validate_base_url("http://admin:hunter2-secret@10.0.0.1/v1", allow_private=True)
    assert "hunter2-secret" not in str(info.value)
