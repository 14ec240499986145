#!/usr/bin/env python3
"""Writes the Grafana dashboards in this directory (fleet-overview.json, autoscaling.json,
api-health.json). Edit the panels here, run `python3 dashboards/generate.py`, commit the JSON.
The `observability` integration test evaluates every panel expression on a real Prometheus."""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SEL='instance=~"$instance"'
RI='$__rate_interval'
def ds(): return {"type":"prometheus","uid":"${datasource}"}
def templ():
    return {"list":[
        {"name":"datasource","label":"Prometheus","type":"datasource","query":"prometheus","current":{},"hide":0,"refresh":1,"regex":"","options":[]},
        {"name":"instance","label":"Manager","type":"query","datasource":ds(),
         "query":{"query":"label_values(gitlab_runner_version_info{name=\"flotilla\"}, instance)","refId":"instance"},
         "definition":"label_values(gitlab_runner_version_info{name=\"flotilla\"}, instance)",
         "multi":True,"includeAll":True,"allValue":".*","current":{"selected":True,"text":["All"],"value":["$__all"]},
         "refresh":2,"sort":1,"hide":0,"regex":"","options":[]}]}
class D:
    def __init__(s,uid,title,desc):
        s.uid,s.title,s.desc=uid,title,desc; s.panels=[]; s.x=0; s.y=0; s.id=1
    def panel(s,title,desc,targets,kind="timeseries",unit=None,w=12,h=8,extra=None):
        if s.x+w>24: s.x=0; s.y+=h
        p={"id":s.id,"type":kind,"title":title,"description":desc,"datasource":ds(),
           "gridPos":{"h":h,"w":w,"x":s.x,"y":s.y},
           "targets":[{"datasource":ds(),"expr":e,"legendFormat":l,"refId":chr(65+i),
                       "range":kind!="table","instant":kind=="table",
                       **({"format":"table"} if kind=="table" else {})} for i,(e,l) in enumerate(targets)],
           "fieldConfig":{"defaults":{"unit":unit or "short"},"overrides":[]},"options":{}}
        if kind=="timeseries":
            p["options"]={"legend":{"displayMode":"table","placement":"bottom","showLegend":True,"calcs":["lastNotNull","max"]},"tooltip":{"mode":"multi","sort":"desc"}}
        if kind=="stat":
            p["options"]={"reduceOptions":{"calcs":["lastNotNull"],"fields":"","values":False},"colorMode":"value","graphMode":"area","textMode":"auto"}
        if extra: p.update(extra)
        s.id+=1; s.x+=w
        if s.x>=24: s.x=0; s.y+=h
        s.panels.append(p)
    def dump(s,path):
        d={"uid":s.uid,"title":s.title,"description":s.desc,"tags":["flotilla","gitlab-runner"],
           "schemaVersion":41,"version":1,"editable":True,"graphTooltip":1,"timezone":"browser",
           "time":{"from":"now-6h","to":"now"},"refresh":"30s","fiscalYearStartMonth":0,"liveNow":False,
           "links":[],"annotations":{"list":[{"builtIn":1,"datasource":{"type":"grafana","uid":"-- Grafana --"},"enable":True,"hide":True,"iconColor":"rgba(0, 211, 255, 1)","name":"Annotations & Alerts","type":"dashboard"}]},
           "__inputs":[],"templating":templ(),"panels":s.panels}
        open(path,"w").write(json.dumps(d,indent=2)+"\n")

f=D("flotilla-fleet","Flotilla / Fleet overview","Jobs running against concurrent, pickup and queue latency, failures by reason, per manager.")
f.panel("Jobs running vs concurrent","Jobs running on the selected managers (gitlab_runner_jobs) against their concurrent setting.",
  [(f'sum by (instance) (gitlab_runner_jobs{{{SEL}}})',"running {{instance}}"),(f'sum by (instance) (gitlab_runner_concurrent{{{SEL}}})',"concurrent {{instance}}")])
f.panel("Saturation","Running jobs as a share of concurrent; the alerts fire above 0.8 and 0.9.",
  [(f'sum by (instance) (gitlab_runner_jobs{{{SEL}}}) / on (instance) sum by (instance) (gitlab_runner_concurrent{{{SEL}}})',"{{instance}}")],unit="percentunit",w=6)
f.panel("Process state","Manager phase: starting, running, graceful-shutdown, forceful-shutdown.",
  [(f'max by (instance, state) (gitlab_runner_process_state_info{{{SEL}}}) == 1',"{{instance}} {{state}}")],kind="stat",w=6)
f.panel("Jobs started per minute","New jobs taken, by runner (short token).",
  [(f'sum by (runner) (rate(gitlab_runner_jobs_total{{{SEL}}}[{RI}])) * 60',"{{runner}}")],unit="short")
f.panel("Job pickup latency","Time from the coordinator handing a job over to its acknowledgement (p50, p95).",
  [(f'histogram_quantile(0.5, sum by (le) (rate(flotilla_job_pickup_seconds_bucket{{{SEL}}}[{RI}])))',"p50"),
   (f'histogram_quantile(0.95, sum by (le) (rate(flotilla_job_pickup_seconds_bucket{{{SEL}}}[{RI}])))',"p95")],unit="s")
f.panel("Time in GitLab's queue","How long jobs waited in GitLab before a manager took them (job_info.time_in_queue_seconds), p50 and p95.",
  [(f'histogram_quantile(0.5, sum by (le) (rate(gitlab_runner_job_queue_duration_seconds_bucket{{{SEL}}}[{RI}])))',"p50"),
   (f'histogram_quantile(0.95, sum by (le) (rate(gitlab_runner_job_queue_duration_seconds_bucket{{{SEL}}}[{RI}])))',"p95")],unit="s")
f.panel("Job duration","Job durations, p50 and p95.",
  [(f'histogram_quantile(0.5, sum by (le) (rate(gitlab_runner_job_duration_seconds_bucket{{{SEL}}}[{RI}])))',"p50"),
   (f'histogram_quantile(0.95, sum by (le) (rate(gitlab_runner_job_duration_seconds_bucket{{{SEL}}}[{RI}])))',"p95")],unit="s")
f.panel("Failed jobs by reason","Failed jobs per minute by GitLab failure reason.",
  [(f'sum by (failure_reason) (rate(gitlab_runner_failed_jobs_total{{{SEL}}}[{RI}])) * 60',"{{failure_reason}}")])
f.panel("Warnings and errors logged","Log events per minute by level (gitlab_runner_errors_total).",
  [(f'sum by (level) (rate(gitlab_runner_errors_total{{{SEL}}}[{RI}])) * 60',"{{level}}")])
f.panel("Trace upload","Job trace bytes per second accepted by the coordinator.",
  [(f'sum by (runner) (rate(flotilla_trace_bytes_sent_total{{{SEL}}}[{RI}]))',"{{runner}}")],unit="Bps")
f.panel("Runner limits","limit per runner (0 = none).",
  [(f'max by (runner, runner_name) (gitlab_runner_limit{{{SEL}}})',"{{runner_name}} ({{runner}})")],kind="stat")
f.panel("Versions","Flotilla version and revision per manager.",
  [(f'max by (instance, version, revision) (gitlab_runner_version_info{{{SEL}}})',"{{instance}} {{version}} {{revision}}")],kind="table",extra={"options":{"showHeader":True}})
f.dump(os.path.join(HERE, "fleet-overview.json"))

a=D("flotilla-autoscaling","Flotilla / Autoscaling","docker+machine pools on Compute Engine: machine states, creations, creation phases, zone health, idle vs busy VM time.")
a.panel("Machines by state","VMs per state (gitlab_runner_autoscaling_machine_states): creating, idle, acquired, used, removing, stuck-on-removing.",
  [(f'sum by (state) (gitlab_runner_autoscaling_machine_states{{{SEL}}})',"{{state}}")])
a.panel("Autoscaling actions per minute","created, creation-failed, used, removed per minute.",
  [(f'sum by (action) (rate(gitlab_runner_autoscaling_actions_total{{{SEL}}}[{RI}])) * 60',"{{action}}")])
a.panel("Creation time","From insert to dockerd answering, p50 and p95 (gitlab_runner_autoscaling_machine_creation_duration_seconds).",
  [(f'histogram_quantile(0.5, sum by (le) (rate(gitlab_runner_autoscaling_machine_creation_duration_seconds_bucket{{{SEL}}}[{RI}])))',"p50"),
   (f'histogram_quantile(0.95, sum by (le) (rate(gitlab_runner_autoscaling_machine_creation_duration_seconds_bucket{{{SEL}}}[{RI}])))',"p95")],unit="s")
a.panel("Creation phases by zone (p95)","insert accepted, instance RUNNING, dockerd ready: where creation time goes, per zone.",
  [(f'histogram_quantile(0.95, sum by (le, zone, phase) (rate(flotilla_vm_creation_phase_seconds_bucket{{{SEL}}}[{RI}])))',"{{zone}} {{phase}}")],unit="s")
a.panel("Zones cooling down","1 while a zone is skipped after a stockout, quota error or creation timeout.",
  [(f'max by (zone) (flotilla_zone_cooling{{{SEL}}})',"{{zone}}")],kind="timeseries")
a.panel("Creation failures by zone and reason","Failed creations per minute (stockout, quota, timeout, other).",
  [(f'sum by (zone, reason) (rate(flotilla_vm_creation_failures_total{{{SEL}}}[{RI}])) * 60',"{{zone}} {{reason}}")])
a.panel("VMs idle vs busy","Average VMs idle (warm or acquired) and busy (running a job), from VM-seconds: the cost of the warm pool.",
  [(f'sum by (state) (rate(flotilla_vm_seconds_total{{{SEL}}}[{RI}]))',"{{state}}")])
a.panel("Busy share of VM time","Busy VM-seconds over all VM-seconds, per runner.",
  [(f'sum by (runner) (rate(flotilla_vm_seconds_total{{{SEL}, state="busy"}}[{RI}])) / sum by (runner) (rate(flotilla_vm_seconds_total{{{SEL}}}[{RI}]))',"{{runner}}")],unit="percentunit")
a.panel("Leaks found","VMs with this manager's label that no pool held, deleted at startup or by a reconcile, in the last hour.",
  [(f'sum by (phase) (increase(flotilla_reconcile_deletions_total{{{SEL}}}[1h]))',"{{phase}}")],kind="stat")
a.panel("Stuck on removing","VMs whose deletion failed past the retries.",
  [(f'sum (gitlab_runner_autoscaling_machine_states{{{SEL}, state="stuck-on-removing"}})',"stuck")],kind="stat")
a.panel("Removal time","From removal start to the deletion confirmed, p95.",
  [(f'histogram_quantile(0.95, sum by (le) (rate(gitlab_runner_autoscaling_machine_removal_duration_seconds_bucket{{{SEL}}}[{RI}])))',"p95")],unit="s")
a.panel("Warm pool: desired vs available","VMs the pool keeps available (flotilla_fleet_desired_idle: IdleCount in force, or the adaptive policy's target) against VMs idle, creating or acquired.",
  [(f'sum by (runner) (flotilla_fleet_desired_idle{{{SEL}}})',"desired {{runner}}"),
   (f'sum (gitlab_runner_autoscaling_machine_states{{{SEL}, state=~"idle|creating|acquired"}})',"available")])
a.panel("Observed demand","What the adaptive policy follows: jobs per minute asking for a VM (flotilla_fleet_arrival_rate) and the mean time from insert to dockerd answering (flotilla_fleet_time_to_ready_seconds, right axis).",
  [(f'max by (runner) (flotilla_fleet_arrival_rate{{{SEL}}}) * 60',"jobs/min {{runner}}"),
   (f'max by (runner) (flotilla_fleet_time_to_ready_seconds{{{SEL}}})',"time to ready s {{runner}}")],
  extra={"fieldConfig":{"defaults":{"unit":"short"},"overrides":[{"matcher":{"id":"byRegexp","options":"time to ready.*"},"properties":[{"id":"unit","value":"s"},{"id":"custom.axisPlacement","value":"right"}]}]}})
a.dump(os.path.join(HERE, "autoscaling.json"))

p=D("flotilla-api","Flotilla / API health","Coordinator (GitLab API v4) and Compute Engine API answers, errors and client-side rate limiting.")
p.panel("Coordinator responses by endpoint and status","Responses per second (every attempt) by endpoint and HTTP status.",
  [(f'sum by (endpoint, status) (rate(gitlab_runner_api_request_statuses_total{{{SEL}}}[{RI}]))',"{{endpoint}} {{status}}")],unit="reqps")
p.panel("Coordinator non-2xx share","Share of coordinator responses that were not 2xx.",
  [(f'(sum by (instance) (rate(gitlab_runner_api_request_statuses_total{{{SEL}, status!~"2.."}}[{RI}])) or sum by (instance) (rate(gitlab_runner_api_request_statuses_total{{{SEL}}}[{RI}])) * 0) / sum by (instance) (rate(gitlab_runner_api_request_statuses_total{{{SEL}}}[{RI}]))',"{{instance}}")],unit="percentunit")
p.panel("Job requests in flight","Job requests (long polls included) in flight per runner against its request_concurrency.",
  [(f'sum by (runner) (gitlab_runner_request_concurrency{{{SEL}}})',"in flight {{runner}}"),
   (f'max by (runner) (gitlab_runner_request_concurrency_hard_limit{{{SEL}}})',"request_concurrency {{runner}}")])
p.panel("Undecodable job answers","201 answers to a job request that were not a job, per minute.",
  [(f'sum by (runner) (rate(flotilla_undecodable_job_responses_total{{{SEL}}}[{RI}])) * 60',"{{runner}}")])
p.panel("Compute Engine calls by method and result","Every attempt, per second.",
  [(f'sum by (method, result) (rate(flotilla_gce_api_calls_total{{{SEL}}}[{RI}]))',"{{method}} {{result}}")],unit="reqps")
p.panel("Compute Engine errors","Calls per second that did not end ok (timeouts of zoneOperations.wait included), by result.",
  [(f'sum by (result) (rate(flotilla_gce_api_calls_total{{{SEL}, result!="ok"}}[{RI}]))',"{{result}}")],unit="reqps")
p.panel("Rate-limit waits","Compute Engine calls per minute delayed by the client-side limit (api_rate_per_minute).",
  [(f'sum by (instance) (rate(flotilla_gce_rate_limit_waits_total{{{SEL}}}[{RI}])) * 60',"{{instance}}")])
p.dump(os.path.join(HERE, "api-health.json"))
