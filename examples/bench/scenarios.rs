//! The single-node scenarios of `make bench` that compare two configurations or a hookflow with
//! the bare pipeline: echo, bare and sessions; durability; lanes; templates; and `pair`, which
//! alternates two configurations round by round.

use super::*;

impl Bench {
    /// echo, then bare right after it with the same sink and load, then the sessions scenario on
    /// the echo server (which sat idle meanwhile).
    pub(super) fn echo_bare_sessions(&mut self) -> Result<(), String> {
        let k = &self.knobs;
        let load = k.load(k.messages, k.sessions);
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let senders = k.senders.map_or("default".to_string(), |s| format!("{s} (BENCH_SENDERS)"));
        section("echo", &format!("echo Flow, durability normal, delivery.senders {senders}"));
        let mut server = self.start("echo", &self.hookflow("normal", None, PATH_TEMPLATE), sink.addr)?;
        self.goal("ready time", server.ready.as_secs_f64() * 1e3, "ms", GOAL_READY_MS, false);
        self.goal("idle RSS", kib_to_mib(server.idle_rss), "MiB", GOAL_IDLE_RSS_MIB, false);
        let mut echo_rates = None;
        if self.knobs.wants("echo") {
            let r = self.measure(&mut server, &sink, load)?;
            echo_rates = Some(Rates::of(&r));
            self.row("echo", &r, Some(&server), String::new());
        }

        if self.knobs.wants("bare") {
            // Round 1 pairs bare with the echo load above; further rounds (BENCH_ROUNDS) pair a
            // fresh hookflow with a fresh bare, so that one disturbed run does not decide the goal.
            let n = if echo_rates.is_some() { self.knobs.rounds } else { 1 };
            let mut pairs: Vec<(Rates, Rates)> = Vec::new();
            for round in 1..=n {
                let suffix = if n > 1 { format!(" #{round}") } else { String::new() };
                let echo = match echo_rates {
                    Some(rates) if round == 1 => Some(rates),
                    Some(_) => {
                        section(&format!("echo{suffix}"), "echo Flow again, fresh server, for the next bare round");
                        let target = self.hookflow("normal", None, PATH_TEMPLATE);
                        let mut again = self.start(&format!("echo-{round}"), &target, sink.addr)?;
                        let r = self.measure(&mut again, &sink, load)?;
                        self.row(&format!("echo{suffix}"), &r, Some(&again), String::new());
                        self.stop(&mut again);
                        Some(Rates::of(&r))
                    }
                    None => None,
                };
                section(
                    &format!("bare{suffix}"),
                    "examples/bare.rs: tiny_http ─► 2 workers ─► 1 ureq sender, no store, no Flow",
                );
                let mut bare = self.start(&format!("bare-{round}"), &Target::Bare, sink.addr)?;
                let r = self.measure(&mut bare, &sink, load)?;
                let mut note = String::new();
                if let Some(echo) = echo {
                    let ratio = echo.delivered / r.delivered_rate().max(1e-9);
                    println!("ratio        hookflow echo ÷ bare delivered/s = {ratio:.2} (goal ≥ {GOAL_BARE_RATIO})");
                    note = format!("echo ÷ bare {ratio:.2}");
                    pairs.push((echo, Rates::of(&r)));
                }
                self.row(&format!("bare{suffix}"), &r, Some(&bare), note);
                self.stop(&mut bare);
            }
            if !pairs.is_empty() {
                let of = |f: fn(&Rates) -> f64| Ratios(pairs.iter().map(|(e, b)| f(e) / f(b)).collect());
                let del = of(|r| r.delivered);
                self.goal("hookflow ÷ bare delivered/s (median)", del.median(), "", GOAL_BARE_RATIO, true);
                self.ratios.push(format!(
                    "bare         hookflow echo ÷ bare: delivered/s {}, accepted/s {}, server CPU per message {}",
                    del.text(),
                    of(|r| r.accepted).text(),
                    of(|r| r.cpu_ms).text()
                ));
            }
        }

        if self.knobs.wants("sessions") {
            let n = self.knobs.idle_sessions;
            section("sessions", &format!("{n} new sessions, one message each, on the echo server; then idle RSS"));
            let load = Load { first: FRESH_SESSIONS_FROM, ..self.knobs.load(n, n) };
            let before = proc_status_field(server.pid, "VmRSS").unwrap_or(0);
            let r = self.measure(&mut server, &sink, load)?;
            thread::sleep(IDLE_WAIT);
            let after = proc_status_field(server.pid, "VmRSS").unwrap_or(0);
            println!(
                "idle RSS     {} after {} s idle (was {} before these sessions; goal ≤ {GOAL_SESSIONS_RSS_MIB} MiB)",
                mib(after),
                IDLE_WAIT.as_secs(),
                mib(before)
            );
            self.goal(
                &format!("idle RSS with {n} more sessions"),
                kib_to_mib(after),
                "MiB",
                GOAL_SESSIONS_RSS_MIB,
                false,
            );
            let mut row = self.row_of(&format!("sessions +{n}"), &r, None, String::new());
            row.idle_rss = Some(after);
            self.rows.push(row);
        }
        self.stop(&mut server);
        Ok(())
    }

    /// The same load with `durability: normal` and `full`.
    pub(super) fn durability(&mut self) -> Result<(), String> {
        let load = self.knobs.load(self.knobs.durability_n, self.knobs.sessions);
        let variants = [
            ("normal", self.hookflow("normal", None, PATH_TEMPLATE), "echo Flow".to_string()),
            ("full", self.hookflow("full", None, PATH_TEMPLATE), "echo Flow, fsync before every 200".to_string()),
        ];
        let rounds = self.pair("durability", variants, load)?;
        let acc = ratios(&rounds, LoadResult::accepted_rate);
        let del = ratios(&rounds, LoadResult::delivered_rate);
        let p50 = ratios(&rounds, |r| r.accept_pct(0.5));
        let line =
            format!("full ÷ normal: accepted/s {}, delivered/s {}, accept p50 {}", acc.text(), del.text(), p50.text());
        println!("\nratio        {line}");
        self.ratios.push(format!("durability   {line}"));
        Ok(())
    }

    /// A slow webhook and 1, 2, 4, 8 sender lanes.
    pub(super) fn lanes(&mut self) -> Result<(), String> {
        let delay = self.knobs.sink_delay;
        let ms = delay.as_millis();
        let sink = Sink::start(self.epoch, SLOW_SINK_THREADS, delay)?;
        let counts = self.knobs.lanes.clone();
        let mut base: Option<f64> = None;
        // Scattered ids first (how random ids spread over the lanes); then, for more than one
        // lane, paired ids (u<k>/s<k>) to show what the lane hash makes of related ids.
        for ids in [Ids::Scattered, Ids::Paired] {
            let load = Load { ids, ..self.knobs.load(self.knobs.lanes_n, self.knobs.lanes_sessions) };
            let (tag, what) = match ids {
                Ids::Scattered => ("", "userId unrelated to sessionId"),
                Ids::Paired => (" u/s", "userId u<k> for sessionId s<k>"),
            };
            let mut speedups = Vec::new();
            for &lanes in counts.iter().filter(|&&n| ids == Ids::Scattered || n > 1) {
                section(
                    &format!("lanes {lanes}{tag}"),
                    &format!("delivery.senders {lanes}, webhook taking {ms} ms per POST, {what}"),
                );
                let target = self.hookflow("normal", Some(lanes), PATH_TEMPLATE);
                let mut server =
                    self.start(&format!("lanes-{lanes}{}", tag.replace([' ', '/'], "")), &target, sink.addr)?;
                let r = self.measure(&mut server, &sink, load)?;
                self.stop(&mut server);
                let rate = r.delivered_rate();
                let speedup = rate / base.get_or_insert(rate).max(1e-9);
                // Each lane has one POST in flight: `lanes` POSTs per `delay` at best.
                let bound = lanes as f64 / delay.as_secs_f64().max(1e-9);
                println!(
                    "speed-up     {speedup:.2}x delivered/s vs {} lane(s); {:.0}% of the {bound:.0} msg/s that {lanes} lane(s) could do",
                    counts[0],
                    100.0 * rate / bound
                );
                let note = format!("{speedup:.2}x vs {}, {:.0}% of {lanes}/{ms}ms", counts[0], 100.0 * rate / bound);
                self.row(&format!("lanes {lanes}{tag} ({ms} ms sink)"), &r, Some(&server), note);
                speedups.push(format!("{lanes}: {speedup:.2}x"));
            }
            self.ratios.push(format!(
                "lanes{}  delivered/s vs {} lane(s), {what}: {}",
                if tag.is_empty() { "       " } else { " u/s   " },
                counts[0],
                speedups.join(", ")
            ));
        }
        Ok(())
    }

    /// The same output through a path template and through a JavaScript one.
    pub(super) fn templates(&mut self) -> Result<(), String> {
        let load = self.knobs.load(self.knobs.template_n, self.knobs.sessions);
        let variants = [
            ("path", self.hookflow("normal", None, PATH_TEMPLATE), format!("say {PATH_TEMPLATE}")),
            ("js", self.hookflow("normal", None, JS_TEMPLATE), format!("say {JS_TEMPLATE}")),
        ];
        let rounds = self.pair("template", variants, load)?;
        let del = ratios(&rounds, LoadResult::delivered_rate);
        let cpu = ratios(&rounds, LoadResult::cpu_ms_per_msg);
        let turn = ratios(&rounds, LoadResult::worker_ms_per_msg);
        let extra: Vec<String> =
            rounds.iter().map(|r| format!("{:.3}", r[1].0.worker_ms_per_msg() - r[0].0.worker_ms_per_msg())).collect();
        let line = format!(
            "js ÷ path: delivered/s {}, server CPU per message {}, worker-thread CPU per message {} \
             (JavaScript adds {} ms of worker CPU per message)",
            del.text(),
            cpu.text(),
            turn.text(),
            extra.join(", ")
        );
        println!("\nratio        {line}");
        self.ratios.push(format!("templates    {line}"));
        Ok(())
    }

    /// Runs `load` against two configurations, alternating them for `BENCH_ROUNDS` rounds so that
    /// a change in the machine's load hits both alike. Each gets a fresh server; the second's
    /// rows carry its ratios to the first.
    pub(super) fn pair(
        &mut self,
        scenario: &str,
        variants: [(&str, Target, String); 2],
        load: Load,
    ) -> Result<Rounds, String> {
        let sink = Sink::start(self.epoch, SINK_THREADS, Duration::ZERO)?;
        let n = self.knobs.rounds;
        let mut rounds: Rounds = Vec::new();
        for round in 1..=n {
            let suffix = if n > 1 { format!(" #{round}") } else { String::new() };
            // Every other round runs the second variant first, so that a drift of the machine
            // over the run (load, page cache, a neighbour) does not favour one of them.
            let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
            let mut pair = Vec::new();
            for i in order {
                let (name, target, what) = &variants[i];
                section(&format!("{scenario} {name}{suffix}"), what);
                let mut server = self.start(&format!("{scenario}-{name}-{round}"), target, sink.addr)?;
                let r = self.measure(&mut server, &sink, load)?;
                self.stop(&mut server);
                pair.push((r, server));
            }
            if order[0] == 1 {
                pair.swap(0, 1);
            }
            let (a, b) = (&pair[0], &pair[1]);
            self.row(&format!("{scenario} {}{suffix}", variants[0].0), &a.0, Some(&a.1), String::new());
            let note = format!(
                "÷ {}: acc {:.2}, del {:.2}, CPU {:.2}",
                variants[0].0,
                b.0.accepted_rate() / a.0.accepted_rate().max(1e-9),
                b.0.delivered_rate() / a.0.delivered_rate().max(1e-9),
                b.0.cpu_ms_per_msg() / a.0.cpu_ms_per_msg().max(1e-9),
            );
            self.row(&format!("{scenario} {}{suffix}", variants[1].0), &b.0, Some(&b.1), note);
            rounds.push(pair);
        }
        Ok(rounds)
    }
}
