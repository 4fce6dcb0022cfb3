-- Prosody as the jabber.lab XMPP server of the edgesim lab (a real federated XMPP partner).
-- A template: simulator.xmpp.prosody.render() fills the ${...} fields. Run it as its own user:
--   runuser -u prosody -- prosody -F --config ${dir}/prosody.cfg.lua

daemonize = false
pidfile = "${dir}/prosody.pid"
data_path = "${dir}/data"
log = { ${log_level} = "${dir}/prosody.log" }

-- one loopback address of its own, the lab's ports
interfaces = { "${address}" }
c2s_ports = { ${c2s_port} }
s2s_ports = { ${s2s_port} }
c2s_direct_tls_ports = { }
s2s_direct_tls_ports = { }
http_ports = { }
https_ports = { }

-- lab names come from the lab DNS (SRV _xmpp-server._tcp and A records)
unbound = {
	forward = "${dns}";
	options = { ["do-not-query-localhost"] = "no" };
}

modules_enabled = {
	"disco"; "roster"; "saslauth"; "tls"; "dialback"; "ping"; "admin_shell";
}
modules_disabled = { ${modules_disabled} }

authentication = "internal_plain"
c2s_require_encryption = true
s2s_require_encryption = true
-- true: the Edge must authenticate with its certificate (SASL EXTERNAL, XEP-0178)
s2s_secure_auth = ${secure_auth}

ssl = {
	certificate = "${dir}/jabber.crt";
	key = "${dir}/jabber.key";
	cafile = "${dir}/lab-trust.pem";
}

VirtualHost "jabber.lab"
