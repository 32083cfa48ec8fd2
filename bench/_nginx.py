"""The nginx configurations of bench/gateway.py: the upstream, the split_clients proxy, and
a minimal Lambda Invoke endpoint.

`nginx_config` writes one under a temporary prefix: one worker, no daemon,
every path (pid, logs, temp folders) inside the prefix, keep-alive on.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["LAMBDA_BODY", "SPLIT_BODY", "UPSTREAM_BODY", "nginx_config"]

_NGINX_COMMON = """\
worker_processes 1;
daemon off;
pid {prefix}/{name}.pid;
error_log {prefix}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/{name}-body;
    proxy_temp_path {prefix}/{name}-proxy;
    fastcgi_temp_path {prefix}/{name}-fastcgi;
    uwsgi_temp_path {prefix}/{name}-uwsgi;
    scgi_temp_path {prefix}/{name}-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{body}
}}
"""

UPSTREAM_BODY = """\
    server {{
        listen 127.0.0.1:{port};
        default_type text/plain;
        location / {{ return 200 "ok\\n"; }}
    }}"""

LAMBDA_BODY = """\
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location /2015-03-31/functions/ {{
            add_header X-Amz-Executed-Version 1 always;
            return 200 '{{"statusCode":200,"headers":{{"content-type":"text/plain"}},"body":"ok\\\\n"}}';
        }}
    }}"""
"""The Lambda Invoke API as fast as it gets: every function's every version answers an API
Gateway proxy response whose body is the upstream's ``ok``; credentials are not checked."""

SPLIT_BODY = """\
    split_clients "${{http_x_user_id}}" $variant {{
        10% canary;
        *   stable;
    }}
    map $variant $version {{ canary v2; default v1; }}
    upstream stable {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    upstream canary {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location /{function}/ {{
            rewrite ^/{function}(/.*)$ /$version$1 break;
            proxy_pass http://$variant;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            add_header x-variant $variant always;
        }}
    }}"""


def nginx_config(prefix: Path, name: str, body: str) -> Path:
    path = prefix / f"{name}.conf"
    path.write_text(_NGINX_COMMON.format(prefix=prefix, name=name, body=body))
    return path
