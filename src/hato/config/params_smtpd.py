"""Parameters of the SMTP server side: smtpd, its restrictions, reply codes,
TLS and SASL, milters, policy delegation and postscreen.

Data only: each ``_p(...)`` call registers one parameter into the table in
:mod:`hato.config.params`, which imports this module.
"""

from __future__ import annotations

from .params import B, I, L, M, R, S, T, _p

# --- smtpd: protocol, commands, timeouts and error limits ---------------------
_p("disable_vrfy_command", B, "no", "Disable the VRFY command.")
_p("smtpd_authorized_verp_clients", L, "$authorized_verp_clients",
   "Clients allowed to use the XVERP command.")
_p("smtpd_authorized_xclient_hosts", L, "", "Clients allowed to use XCLIENT.")
_p("smtpd_authorized_xforward_hosts", L, "", "Clients allowed to use XFORWARD.")
_p("smtpd_banner", S, "$myhostname ESMTP $mail_name", 'The text after "220" in the SMTP greeting.')
_p("smtpd_client_port_logging", B, "no",
   "Log the client's port number along with its name and address.")
_p("smtpd_command_filter", M, "", "Tables that rewrite client commands before smtpd parses them.")
_p("smtpd_delay_open_until_valid_rcpt", B, "yes",
   "Start a mail transaction (and queue file) only after a valid RCPT TO.")
_p("smtpd_discard_ehlo_keyword_address_maps", M, "",
   "Per-client EHLO keywords that smtpd does not announce.")
_p("smtpd_discard_ehlo_keywords", L, "", "EHLO keywords that smtpd does not announce.")
_p("smtpd_error_sleep_time", T, "1s",
   "The reply delay after a client has made smtpd_soft_error_limit errors.")
_p("smtpd_forbid_bare_newline", S, "normalize",
   "What to do with lines that end in a bare LF: no, normalize (or yes), reject.")
_p("smtpd_forbid_bare_newline_exclusions", L, "$mynetworks",
   "Clients exempt from smtpd_forbid_bare_newline.")
_p("smtpd_forbid_unauth_pipelining", B, "no",
   "Disconnect clients that pipeline commands when not allowed.")
_p("smtpd_forbidden_commands", L, "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}",
   "Commands that end the session at once (cross-protocol attacks).")
_p("smtpd_hard_error_limit", I, "${stress?{1}:{20}}",
   "Maximal errors a client may make before it is disconnected.", lo=1)
_p("smtpd_history_flush_threshold", I, "100",
   "Maximal lines of command history kept for transcripts.", lo=1)
_p("smtpd_junk_command_limit", I, "${stress?{1}:{100}}",
   "How many NOOP, VRFY, ETRN or RSET commands are free before each counts as an error.", lo=1)
_p("smtpd_min_data_rate", I, "500",
   "The minimal DATA/BDAT rate in bytes per second under per-request deadlines.", lo=1)
_p("smtpd_noop_commands", L, "", 'Commands answered "250 Ok" without any other effect.')
_p("smtpd_peername_lookup", B, "yes", "Look up and verify the client's hostname.")
_p("smtpd_per_request_deadline", B,
   "${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}",
   "Make smtpd_timeout a deadline for a whole request instead of per read or write.")
_p("smtpd_proxy_ehlo", S, "$myhostname",
   "The EHLO name smtpd sends to a before-queue proxy filter.")
_p("smtpd_proxy_filter", S, "", "The host:port of a before-queue proxy filter.")
_p("smtpd_proxy_options", L, "", "Options for talking to the before-queue proxy filter.")
_p("smtpd_proxy_timeout", T, "100s",
   "Time limit for talking to the before-queue proxy filter.", lo=1)
_p("smtpd_recipient_overshoot_limit", I, "1000",
   "Recipients beyond smtpd_recipient_limit allowed before each counts as an error.", lo=1)
_p("smtpd_service_name", S, "smtpd", "The service postscreen hands allowed clients to.")
_p("smtpd_soft_error_limit", I, "10", "Errors after which smtpd slows its replies.", lo=1)
_p("smtpd_upstream_proxy_protocol", S, "",
   "The proxy protocol spoken by a proxy in front of smtpd (haproxy).")
_p("smtpd_upstream_proxy_timeout", T, "5s",
   "Time limit for receiving the proxy protocol header.", lo=1)
_p("strict_rfc821_envelopes", B, "no",
   "Require <> around MAIL FROM and RCPT TO addresses and no comments.")

# --- smtpd: per-client limits kept by anvil (see also params.py) --------------
_p("smtpd_client_auth_rate_limit", I, "0",
   "Maximal AUTH commands per client per time unit; 0 means no limit.")
_p("smtpd_client_new_tls_session_rate_limit", I, "0",
   "Maximal new TLS sessions per client per time unit; 0 means no limit.")

# --- smtpd: access restrictions -----------------------------------------------
_p("allow_untrusted_routing", B, "no",
   "Relay sender-routed addresses (user%host, a!b, @a:b) from untrusted clients.")
_p("default_rbl_reply", S,
   "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using"
   " $rbl_domain${rbl_reason?; $rbl_reason}",
   "The reply template for rejects by DNSBL restrictions.")
_p("hato_dns_servers", L, "",
   "DNS servers to ask (host, host:port or [ipv6]:port); empty means /etc/resolv.conf.")
_p("maps_rbl_domains", L, "", "Obsolete: DNSBL zones for reject_maps_rbl.")
_p("permit_mx_backup_networks", L, "",
   "Networks that the primary MX must be in for permit_mx_backup.")
_p("rbl_reply_maps", M, "", "Tables of reply templates per DNSBL zone.")
_p("reject_tempfail_action", S, "defer_if_permit",
   "What a reject-type restriction does on a temporary failure.")
_p("relay_clientcerts", M, "",
   "Tables of client certificate fingerprints that permit_tls_clientcerts accepts.")
_p("smtpd_client_restrictions", R, "", "Restrictions applied when a client connects.")
_p("smtpd_data_restrictions", R, "", "Restrictions applied at the DATA command.")
_p("smtpd_delay_reject", B, "yes",
   "Evaluate client, HELO and sender restrictions at RCPT (or ETRN) time.")
_p("smtpd_dns_reply_filter", M, "", "Tables that filter DNS results that smtpd looks up.")
_p("smtpd_end_of_data_restrictions", R, "", "Restrictions applied at the end of message data.")
_p("smtpd_etrn_restrictions", R, "", "Restrictions applied at the ETRN command.")
_p("smtpd_expansion_filter", S,
   '\\t\\40!"#$%&\'()*+,'
   "-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
   "Characters allowed in $name expansions of DNSBL reply templates.")
_p("smtpd_helo_required", B, "no", "Require HELO or EHLO before MAIL FROM.")
_p("smtpd_helo_restrictions", R, "", "Restrictions applied at HELO or EHLO.")
_p("smtpd_log_access_permit_actions", L, "", "Permit actions that are logged like rejects.")
_p("smtpd_null_access_lookup_key", S, "<>", "The access table key used for the null sender.")
_p("smtpd_recipient_restrictions", R, "",
   "Restrictions applied at RCPT TO, after smtpd_relay_restrictions.")
_p("smtpd_reject_footer", S, "", "Text appended to smtpd's 4xx and 5xx replies.")
_p("smtpd_reject_footer_maps", M, "",
   "Tables of text appended to smtpd's 4xx and 5xx replies, keyed by the reply.")
_p("smtpd_reject_unlisted_recipient", B, "yes",
   "Reject unknown recipients even without reject_unlisted_recipient.")
_p("smtpd_reject_unlisted_sender", B, "no",
   "Reject unknown senders even without reject_unlisted_sender.")
_p("smtpd_relay_before_recipient_restrictions", B,
   "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
   "Evaluate smtpd_relay_restrictions before smtpd_recipient_restrictions.")
_p("smtpd_relay_restrictions", R,
   "${{$compatibility_level} <level {1} ? {} : {permit_mynetworks, permit_sasl_authenticated,"
   " defer_unauth_destination}}",
   "Relay-control restrictions applied at RCPT TO.")
_p("smtpd_restriction_classes", L, "", "Names of user-defined groups of restrictions.")
_p("smtpd_sender_restrictions", R, "", "Restrictions applied at MAIL FROM.")
_p("unknown_address_tempfail_action", S, "$reject_tempfail_action",
   "What reject_unknown_sender/recipient_domain do on a temporary failure.")
_p("unknown_helo_hostname_tempfail_action", S, "$reject_tempfail_action",
   "What reject_unknown_helo_hostname does on a temporary failure.")

# --- smtpd: reply codes and temporary-failure actions -------------------------
_p("access_map_defer_code", I, "450", 'The reply code for a "defer" action in an access table.')
_p("access_map_reject_code", I, "554", 'The reply code for a "reject" action in an access table.')
_p("defer_code", I, "450", 'The reply code of the "defer" restriction.')
_p("invalid_hostname_reject_code", I, "501", "The reply code of reject_invalid_helo_hostname.")
_p("maps_rbl_reject_code", I, "554",
   "The reply code of reject_rbl_client and the reject_rhsbl_* restrictions.")
_p("multi_recipient_bounce_reject_code", I, "550",
   "The reply code of reject_multi_recipient_bounce.")
_p("non_fqdn_reject_code", I, "504", "The reply code of the reject_non_fqdn_* restrictions.")
_p("plaintext_reject_code", I, "450", "The reply code of reject_plaintext_session.")
_p("reject_code", I, "554", 'The reply code of the "reject" restriction.')
_p("relay_domains_reject_code", I, "554", "The reply code of reject_unauth_destination.")
_p("smtpd_forbid_bare_newline_reject_code", I, "550",
   "The reply code when a request with a bare newline is rejected.", lo=500, hi=599)
_p("unknown_address_reject_code", I, "450",
   "The reply code when a sender or recipient domain does not exist.")
_p("unknown_client_reject_code", I, "450", "The reply code of reject_unknown_client_hostname.")
_p("unknown_hostname_reject_code", I, "450", "The reply code of reject_unknown_helo_hostname.")
_p("unknown_local_recipient_reject_code", I, "550",
   "The reply code for a local recipient not in $local_recipient_maps.")
_p("unknown_relay_recipient_reject_code", I, "550",
   "The reply code for a relay recipient not in $relay_recipient_maps.")
_p("unknown_virtual_alias_reject_code", I, "550",
   "The reply code for a virtual alias recipient not in $virtual_alias_maps.")
_p("unknown_virtual_mailbox_reject_code", I, "550",
   "The reply code for a virtual mailbox recipient not in $virtual_mailbox_maps.")
_p("unverified_recipient_defer_code", I, "450",
   "The reply code when a recipient probe fails temporarily.", lo=200, hi=499)
_p("unverified_recipient_reject_code", I, "450",
   "The reply code when reject_unverified_recipient rejects an address.", lo=200, hi=599)
_p("unverified_recipient_reject_reason", S, "",
   "The reply text when reject_unverified_recipient rejects an address.")
_p("unverified_recipient_tempfail_action", S, "$reject_tempfail_action",
   "What reject_unverified_recipient does on a temporary failure.")
_p("unverified_sender_defer_code", I, "450",
   "The reply code when a sender probe fails temporarily.", lo=200, hi=499)
_p("unverified_sender_reject_code", I, "450",
   "The reply code when reject_unverified_sender rejects an address.", lo=200, hi=599)
_p("unverified_sender_reject_reason", S, "",
   "The reply text when reject_unverified_sender rejects an address.")
_p("unverified_sender_tempfail_action", S, "$reject_tempfail_action",
   "What reject_unverified_sender does on a temporary failure.")

# --- smtpd: TLS ---------------------------------------------------------------
_p("smtpd_enforce_tls", B, "no",
   "Obsolete: require STARTTLS (use smtpd_tls_security_level = encrypt).")
_p("smtpd_starttls_timeout", T, "${stress?{10}:{300}}s",
   "Time limit for each read and write during the TLS handshake and shutdown.", lo=1)
_p("smtpd_tls_CAfile", S, "", "A PEM file of CA certificates trusted for client certificates.")
_p("smtpd_tls_CApath", S, "", "A directory of PEM CA certificates trusted for client certificates.")
_p("smtpd_tls_always_issue_session_ids", B, "yes",
   "Issue TLS session IDs even without a session cache.")
_p("smtpd_tls_ask_ccert", B, "no", "Ask clients for a certificate.")
_p("smtpd_tls_auth_only", B, "no", "Offer and accept AUTH only over TLS.")
_p("smtpd_tls_ccert_verifydepth", I, "9", "The maximal chain depth for client certificates.")
_p("smtpd_tls_cert_file", S, "", "The server's RSA certificate (PEM).")
_p("smtpd_tls_chain_files", L, "",
   "PEM files each holding a private key and its certificate chain.")
_p("smtpd_tls_ciphers", S, "medium", "The lowest cipher grade used with opportunistic TLS.")
_p("smtpd_tls_dcert_file", S, "", "The server's DSA certificate (PEM).")
_p("smtpd_tls_dh1024_param_file", S, "", "A file with DH parameters for non-export EDH ciphers.")
_p("smtpd_tls_dh512_param_file", S, "", "Obsolete: DH parameters for export EDH ciphers.")
_p("smtpd_tls_dkey_file", S, "$smtpd_tls_dcert_file", "The server's DSA private key (PEM).")
_p("smtpd_tls_eccert_file", S, "", "The server's ECDSA certificate (PEM).")
_p("smtpd_tls_eckey_file", S, "$smtpd_tls_eccert_file", "The server's ECDSA private key (PEM).")
_p("smtpd_tls_eecdh_grade", S, "auto",
   "The curve grade for ephemeral ECDH: none, strong, ultra or auto.")
_p("smtpd_tls_exclude_ciphers", L, "", "Ciphers excluded at every TLS level.")
_p("smtpd_tls_fingerprint_digest", S, "${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}",
   "The digest used for client certificate fingerprints.")
_p("smtpd_tls_key_file", S, "$smtpd_tls_cert_file", "The server's RSA private key (PEM).")
_p("smtpd_tls_loglevel", S, "0", "How much TLS activity smtpd logs (0 to 4).")
_p("smtpd_tls_mandatory_ciphers", S, "medium", "The lowest cipher grade used with mandatory TLS.")
_p("smtpd_tls_mandatory_exclude_ciphers", L, "", "Ciphers also excluded with mandatory TLS.")
_p("smtpd_tls_mandatory_protocols", L, ">=TLSv1",
   "TLS protocol versions accepted with mandatory TLS.")
_p("smtpd_tls_protocols", L, ">=TLSv1", "TLS protocol versions accepted with opportunistic TLS.")
_p("smtpd_tls_received_header", B, "no",
   "Record the TLS protocol, cipher and client certificate in Received:.")
_p("smtpd_tls_req_ccert", B, "no", "Require a trusted client certificate under mandatory TLS.")
_p("smtpd_tls_security_level", S, "", "The server's TLS level: none, may or encrypt.")
_p("smtpd_tls_session_cache_database", M, "", "The table for the server's TLS session cache.")
_p("smtpd_tls_session_cache_timeout", T, "3600s",
   "How long cached TLS sessions and tickets stay valid.", hi=8640000)
_p("smtpd_tls_wrappermode", B, "no",
   "Speak TLS from the first byte (the smtps service) instead of STARTTLS.")
_p("smtpd_use_tls", B, "no", "Obsolete: offer STARTTLS (use smtpd_tls_security_level = may).")

# --- smtpd: SASL authentication -----------------------------------------------
_p("broken_sasl_auth_clients", B, "no",
   'Also announce AUTH in the obsolete "AUTH=" form for old clients.')
_p("cyrus_sasl_config_path", S, "",
   "Where to look for the Cyrus SASL configuration file ($smtpd_sasl_path.conf).")
_p("send_cyrus_sasl_authzid", B, "no",
   "Send a SASL authorization ID when authenticating to a remote server.")
_p("smtpd_sasl_auth_enable", B, "no", "Offer and accept SASL authentication.")
_p("smtpd_sasl_authenticated_header", B, "no",
   "Put the authenticated user name in the Received: header.")
_p("smtpd_sasl_exceptions_networks", L, "", "Clients that are not offered AUTH.")
_p("smtpd_sasl_local_domain", S, "", "The SASL realm of local users.")
_p("smtpd_sasl_mechanism_filter", L, "!external, static:rest",
   "Which SASL mechanisms are announced.")
_p("smtpd_sasl_path", S, "smtpd",
   "Where the SASL backend is: a Cyrus config name or a Dovecot socket.")
_p("smtpd_sasl_response_limit", I, "12288",
   "The maximal length of a client's SASL response.", lo=12288)
_p("smtpd_sasl_security_options", L, "noanonymous",
   "Restrictions on SASL mechanisms over plaintext sessions.")
_p("smtpd_sasl_service", S, "smtp", "The service name passed to the SASL backend.")
_p("smtpd_sasl_tls_security_options", L, "$smtpd_sasl_security_options",
   "Restrictions on SASL mechanisms over TLS sessions.")
_p("smtpd_sasl_type", S, "cyrus", "The SASL backend: cyrus or dovecot.")
_p("smtpd_sender_login_maps", M, "", "Tables of the SASL login names that own each sender address.")

# --- milters ------------------------------------------------------------------
_p("milter_command_timeout", T, "30s",
   "Time limit for sending an SMTP command to a milter and reading its reply.", lo=1)
_p("milter_connect_macros", L, "j {daemon_name} {daemon_addr} v _",
   "Macros sent to milters after the connection is made.")
_p("milter_connect_timeout", T, "30s",
   "Time limit for connecting to a milter and negotiating options.", lo=1)
_p("milter_content_timeout", T, "300s",
   "Time limit for sending message content to a milter and reading its reply.", lo=1)
_p("milter_data_macros", L, "i", "Macros sent to milters after the DATA command.")
_p("milter_default_action", S, "tempfail",
   "What to do when a milter is unavailable: accept, reject, tempfail or quarantine.")
_p("milter_end_of_data_macros", L, "i", "Macros sent to milters at the end of the message.")
_p("milter_end_of_header_macros", L, "i", "Macros sent to milters at the end of the headers.")
_p("milter_header_checks", M, "", "Header checks applied to headers that milters add or change.")
_p("milter_helo_macros", L, "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
   "Macros sent to milters after HELO or EHLO.")
_p("milter_macro_daemon_name", S, "$myhostname", "The value of the {daemon_name} milter macro.")
_p("milter_macro_defaults", L, "", "Default name=value pairs for milter macros that have no value.")
_p("milter_macro_v", S, "$mail_name $mail_version", "The value of the {v} milter macro.")
_p("milter_mail_macros", L,
   "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
   "Macros sent to milters after MAIL FROM.")
_p("milter_protocol", S, "6", "The milter protocol version (2 to 6) and extensions.")
_p("milter_rcpt_macros", L, "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
   "Macros sent to milters after RCPT TO.")
_p("milter_unknown_command_macros", L, "", "Macros sent to milters after an unknown command.")
_p("non_smtpd_milters", L, "",
   "Milters for mail that does not arrive over SMTP (sendmail, pickup).")
_p("smtpd_milter_maps", M, "", "Per-client tables of milters that replace $smtpd_milters.")
_p("smtpd_milters", L, "", "Milters for mail that arrives over SMTP.")

# --- policy delegation (check_policy_service) ---------------------------------
_p("smtpd_policy_service_default_action", S, "451 4.3.5 Server configuration problem",
   "The action when a policy service cannot be reached.")
_p("smtpd_policy_service_max_idle", T, "300s",
   "How long an idle policy service connection is kept.", lo=1)
_p("smtpd_policy_service_max_ttl", T, "1000s",
   "How long a policy service connection is used before it is closed.", lo=1)
_p("smtpd_policy_service_policy_context", S, "",
   "The policy_context attribute sent with each policy request.")
_p("smtpd_policy_service_request_limit", I, "0",
   "Maximal requests per policy service connection; 0 means no limit.")
_p("smtpd_policy_service_retry_delay", T, "1s",
   "The pause before a failed policy request is sent again.", lo=1)
_p("smtpd_policy_service_timeout", T, "100s",
   "Time limit for connecting to, writing to or reading from a policy server.", lo=1)
_p("smtpd_policy_service_try_limit", I, "2",
   "How often a policy request is tried before giving up.", lo=1)

# --- postscreen ---------------------------------------------------------------
_p("postscreen_access_list", R, "permit_mynetworks",
   "The permanent allow/deny list of client addresses, checked first.")
_p("postscreen_allowlist_interfaces", L,
   "${postscreen_whitelist_interfaces?{$postscreen_whitelist_interfaces}:{static:all}}",
   "Local addresses on which a client can earn postscreen's temporary allowlist status.")
_p("postscreen_bare_newline_action", S, "ignore",
   "What to do with a client that sends a bare newline: ignore, enforce or drop.")
_p("postscreen_bare_newline_enable", B, "no", "Run the bare-newline test.")
_p("postscreen_bare_newline_ttl", T, "30d",
   "How long a passed bare-newline test is remembered.", lo=1, unit="d")
_p("postscreen_cache_cleanup_interval", T, "12h",
   "The time between clean-ups of the postscreen cache; 0 means never.", unit="h")
_p("postscreen_cache_map", M, "btree:$data_directory/postscreen_cache",
   "The table where postscreen remembers test results.")
_p("postscreen_cache_retention_time", T, "7d",
   "How long an expired cache entry is kept before it is removed.", lo=1, unit="d")
_p("hato_postscreen_cache", S, "",
   "redis:URL keeps postscreen's cache in Redis, shared by several instances "
   "(replaces postscreen_cache_map).")
_p("postscreen_client_connection_count_limit", I, "$smtpd_client_connection_count_limit",
   "Maximal simultaneous postscreen connections from one client.")
_p("postscreen_command_count_limit", I, "20",
   "Maximal commands per session in postscreen's SMTP engine.", lo=1)
_p("postscreen_command_filter", M, "",
   "Tables that rewrite client commands in postscreen's SMTP engine.")
_p("postscreen_command_time_limit", T, "${stress?{10}:{300}}s",
   "Time limit for reading one command in postscreen's SMTP engine.", lo=1)
_p("postscreen_denylist_action", S,
   "${postscreen_blacklist_action?{$postscreen_blacklist_action}:{ignore}}",
   "What to do with a client denied by postscreen_access_list: ignore, enforce or drop.")
_p("postscreen_disable_vrfy_command", B, "$disable_vrfy_command",
   "Disable VRFY in postscreen's SMTP engine.")
_p("postscreen_discard_ehlo_keyword_address_maps", M, "$smtpd_discard_ehlo_keyword_address_maps",
   "Per-client EHLO keywords that postscreen does not announce.")
_p("postscreen_discard_ehlo_keywords", L, "$smtpd_discard_ehlo_keywords",
   "EHLO keywords that postscreen does not announce.")
_p("postscreen_dnsbl_action", S, "ignore",
   "What to do with a client whose DNSBL score reaches the threshold.")
_p("postscreen_dnsbl_allowlist_threshold", I,
   "${postscreen_dnsbl_whitelist_threshold?{$postscreen_dnsbl_whitelist_threshold}:{0}}",
   "A DNSBL score at or below which a client skips the other tests; 0 disables this.")
_p("postscreen_dnsbl_max_ttl", T, "${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1}}h",
   "The longest time a DNSBL result is used.", lo=1, unit="h")
_p("postscreen_dnsbl_min_ttl", T, "60s", "The shortest time a DNSBL result is used.", lo=1)
_p("postscreen_dnsbl_reply_map", M, "", "Tables that replace DNSBL zone names in reject replies.")
_p("postscreen_dnsbl_sites", L, "", "DNS allow/deny lists with filters and weights.")
_p("postscreen_dnsbl_threshold", I, "1",
   "The DNSBL score at or above which a client is blocked.", lo=1)
_p("postscreen_dnsbl_timeout", T, "10s", "Time limit for DNSBL and DNSWL lookups.", lo=1)
_p("postscreen_enforce_tls", B, "$smtpd_enforce_tls",
   "Obsolete: require STARTTLS in postscreen's SMTP engine.")
_p("postscreen_expansion_filter", S, "$smtpd_expansion_filter",
   "Characters allowed in postscreen_reject_footer expansions.")
_p("postscreen_forbidden_commands", L, "$smtpd_forbidden_commands",
   "Commands that postscreen treats as non-SMTP.")
_p("postscreen_greet_action", S, "ignore",
   "What to do with a client that talks before its turn: ignore, enforce or drop.")
_p("postscreen_greet_banner", S, "$smtpd_banner",
   'The text of the "220-" line sent before the real greeting; empty means none.')
_p("postscreen_greet_ttl", T, "1d",
   "How long a passed pre-greet test is remembered.", lo=1, unit="d")
_p("postscreen_greet_wait", T, "${stress?{2}:{6}}s",
   "How long postscreen waits for a client to talk early and for DNSBL results.", lo=1)
_p("postscreen_helo_required", B, "$smtpd_helo_required",
   "Require HELO or EHLO in postscreen's SMTP engine.")
_p("postscreen_non_smtp_command_action", S, "drop",
   "What to do with a client that sends a forbidden command: ignore, enforce or drop.")
_p("postscreen_non_smtp_command_enable", B, "no", "Run the non-SMTP-command test.")
_p("postscreen_non_smtp_command_ttl", T, "30d",
   "How long a passed non-SMTP-command test is remembered.", lo=1, unit="d")
_p("postscreen_pipelining_action", S, "enforce",
   "What to do with a client that pipelines without PIPELINING: ignore, enforce or drop.")
_p("postscreen_pipelining_enable", B, "no", "Run the pipelining test.")
_p("postscreen_pipelining_ttl", T, "30d",
   "How long a passed pipelining test is remembered.", lo=1, unit="d")
_p("postscreen_post_queue_limit", I, "$default_process_limit",
   "How many clients may wait for a free smtpd.", lo=5)
_p("postscreen_pre_queue_limit", I, "$default_process_limit",
   "How many clients may wait for postscreen's verdict.", lo=10)
_p("postscreen_reject_footer", S, "$smtpd_reject_footer",
   "Text appended to postscreen's 4xx and 5xx replies.")
_p("postscreen_reject_footer_maps", M, "$smtpd_reject_footer_maps",
   "Tables of text appended to postscreen's 4xx and 5xx replies.")
_p("postscreen_tls_security_level", S, "$smtpd_tls_security_level",
   "The TLS level of postscreen's SMTP engine: none, may or encrypt.")
_p("postscreen_upstream_proxy_protocol", S, "",
   "The proxy protocol spoken by a proxy in front of postscreen (haproxy).")
_p("postscreen_upstream_proxy_timeout", T, "5s",
   "Time limit for receiving the proxy protocol header.", lo=1)
_p("postscreen_use_tls", B, "$smtpd_use_tls",
   "Obsolete: offer STARTTLS in postscreen's SMTP engine.")
_p("postscreen_watchdog_timeout", T, "10s",
   "How long postscreen may take for a command or cache operation before it is killed.", lo=10)
