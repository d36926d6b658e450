use super::*;
use serde_json::json;

fn doc() -> Value {
    json!({
        "Id": "abc123",
        "Name": "/web",
        "Names": ["web", "frontend"],
        "State": {"Pid": 4242, "Running": true, "ExitCode": 0, "Health": null},
        "Mounts": [
            {"Type": "bind", "Source": "/srv/<data>&co", "Destination": "/data"},
            {"Type": "volume", "Source": "logs", "Destination": "/logs"}
        ],
        "Config": {"Labels": {"a.b": "dotted", "z": "last", "com.example": "x"}, "Env": null},
        "A": [[1, 2, 3], []],
        "Ratio": 0.25,
        "Big": 12345678.0,
        "Tiny": 0.00001,
        "Count": 3.0
    })
}

fn render(src: &str) -> String {
    let t = Template::parse(src).expect("template parses");
    t.render(&doc()).expect("template renders")
}

fn render_err(src: &str) -> String {
    let t = Template::parse(src).expect("template parses");
    match t.render(&doc()) {
        Ok(s) => panic!("expected an execution error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn parse_err(src: &str) -> String {
    match Template::parse(src) {
        Ok(_) => panic!("expected a parse error for {src:?}"),
        Err(e) => {
            assert!(matches!(e, TemplateError::Parse { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn field_chain() {
    assert_eq!(render("{{.State.Pid}}"), "4242");
    assert_eq!(render("pid={{ .State.Pid }}!"), "pid=4242!");
    assert_eq!(render("{{.Config.Labels.z}}"), "last");
}

#[test]
fn json_of_array_of_objects() {
    assert_eq!(
        render("{{json .Mounts}}"),
        r#"[{"Destination":"/data","Source":"/srv/<data>&co","Type":"bind"},{"Destination":"/logs","Source":"logs","Type":"volume"}]"#
    );
    assert_eq!(render("{{json .Name}}"), r#""/web""#);
    assert_eq!(render("{{json .Nope}}"), "null");
    assert_eq!(render("{{json .Config.Env}}"), "null");
    assert_eq!(render("{{json .State.Running}}"), "true");
    assert_eq!(render("{{json .Big}} {{json .Ratio}}"), "12345678 0.25");
    assert_eq!(
        render(r#"{{json "tab\tquote\"nl\nctl\u0001ls\u2028"}}"#),
        r#""tab\tquote\"nl\nctl\u0001ls\u2028""#
    );
}

#[test]
fn json_float_encoding_matches_go() {
    assert_eq!(json_float(1e21), "1e+21");
    assert_eq!(json_float(1e20), "100000000000000000000");
    assert_eq!(json_float(1e-7), "1e-7");
    assert_eq!(json_float(0.000001), "0.000001");
    assert_eq!(json_float(-2.5), "-2.5");
    assert_eq!(json_float(0.0), "0");
}

#[test]
fn missing_key_prints_no_value() {
    assert_eq!(render("{{.Nope}}"), "<no value>");
    assert_eq!(render("{{.Nope.Deeper.Still}}"), "<no value>");
    assert_eq!(render("{{.State.Health}}"), "<no value>");
    assert_eq!(render("{{.Config.Labels.missing}}"), "<no value>");
}

#[test]
fn field_on_non_object_is_error() {
    let e = render_err("{{.Name.Foo}}");
    assert_eq!(
        e,
        r#"template: :1:2: executing "" at <.Name.Foo>: can't evaluate field Foo in type string"#
    );
    let e = render_err("{{.State.Health.Status}}");
    assert!(
        e.contains("nil pointer evaluating interface {}.Status"),
        "{e}"
    );
    let e = render_err("x\n {{.State.Pid.X}}");
    assert!(e.starts_with("template: :2:3: "), "{e}");
    assert!(e.contains("in type int"), "{e}");
}

#[test]
fn range_over_array() {
    assert_eq!(
        render("{{range .Mounts}}{{.Destination}} {{end}}"),
        "/data /logs "
    );
    assert_eq!(
        render("{{range $i, $m := .Mounts}}{{$i}}={{$m.Type}},{{end}}"),
        "0=bind,1=volume,"
    );
    assert_eq!(
        render("{{range $m := .Mounts}}{{$m.Source}}@{{$.Name}} {{end}}"),
        "/srv/<data>&co@/web logs@/web "
    );
}

#[test]
fn range_else_break_continue_and_int() {
    assert_eq!(render("{{range .Nope}}x{{else}}empty{{end}}"), "empty");
    assert_eq!(render("{{range .Config.Env}}x{{else}}none{{end}}"), "none");
    assert_eq!(render("{{range index .A 1}}x{{else}}[]{{end}}"), "[]");
    assert_eq!(
        render(r#"{{range .Names}}{{if eq . "web"}}{{continue}}{{end}}{{.}}{{break}}{{end}}"#),
        "frontend"
    );
    assert_eq!(render("{{range 3}}{{.}}{{end}}"), "012");
    assert!(render_err("{{range .Name}}{{end}}").contains("range can't iterate over /web"));
}

#[test]
fn index_function() {
    assert_eq!(render(r#"{{index .Config.Labels "a.b"}}"#), "dotted");
    assert_eq!(render(r#"{{index .Config.Labels "none"}}"#), "<no value>");
    assert_eq!(render("{{index .Names 1}}"), "frontend");
    assert_eq!(render("{{index .A 0 2}}"), "3");
    assert_eq!(render("{{(index .Mounts 1).Destination}}"), "/logs");
    let e = render_err("{{index .Names 5}}");
    assert!(e.contains("at <index .Names 5>"), "{e}");
    assert!(
        e.contains("error calling index: index out of range: 5"),
        "{e}"
    );
}

#[test]
fn if_else() {
    assert_eq!(render("{{if .State.Running}}up{{else}}down{{end}}"), "up");
    assert_eq!(
        render("{{if .State.ExitCode}}failed{{else}}ok{{end}}"),
        "ok"
    );
    assert_eq!(render("{{if .Nope}}yes{{else}}no{{end}}"), "no");
    assert_eq!(
        render("{{if .Nope}}a{{else if .State.ExitCode}}b{{else if .Names}}c{{else}}d{{end}}"),
        "c"
    );
    assert_eq!(render("{{if index .A 1}}x{{else}}empty{{end}}"), "empty");
}

#[test]
fn with_else() {
    assert_eq!(render("{{with .State}}{{.Pid}}{{end}}"), "4242");
    assert_eq!(render("{{with .Nope}}x{{else}}none{{end}}"), "none");
    assert_eq!(
        render("{{with .Nope}}a{{else with .Names}}{{index . 0}}{{end}}"),
        "web"
    );
    assert_eq!(render("{{with $s := .State}}{{$s.Pid}}{{end}}"), "4242");
}

#[test]
fn range_map_with_key_and_value() {
    assert_eq!(
        render("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}"),
        "a.b=dotted;com.example=x;z=last;"
    );
    assert_eq!(
        render("{{range .Config.Labels}}{{.}} {{end}}"),
        "dotted x last "
    );
}

#[test]
fn printf_widths_and_verbs() {
    assert_eq!(
        render(r#"{{printf "%-8s|%6d|%06.2f|%5s|" .Name .State.Pid .Ratio "ab"}}"#),
        "/web    |  4242|000.25|   ab|"
    );
    assert_eq!(
        render(r#"{{printf "%q %v %t %x %X %% %s" .Name .Names true 255 "hi" .Names}}"#),
        r#""/web" [web frontend] true ff 6869 % [web frontend]"#
    );
    assert_eq!(
        render(r#"{{printf "%d|%5.1f|%e" 7 3.14159 1234.5}}"#),
        "7|  3.1|1.234500e+03"
    );
    assert_eq!(
        render(r#"{{printf "%.2s|%-4d|%+d" "abcdef" 1 5}}"#),
        "ab|1   |+5"
    );
    assert_eq!(render(r#"{{printf "%s" .State.Pid}}"#), "%!s(int=4242)");
    assert_eq!(render(r#"{{printf "%d %d" 1}}"#), "1 %!d(MISSING)");
    assert_eq!(render(r#"{{printf "%d" 1 "x"}}"#), "1%!(EXTRA string=x)");
    assert_eq!(
        render(r#"{{printf "%v|%s" .Nope .Nope}}"#),
        "<nil>|%!s(<nil>)"
    );
    assert_eq!(render(r#"{{.Name | printf "name=%s"}}"#), "name=/web");
}

#[test]
fn docker_string_functions() {
    assert_eq!(render(r#"{{join .Names ","}}"#), "web,frontend");
    assert_eq!(render(r#"{{join .Config.Env ","}}"#), "");
    assert_eq!(render("{{upper .Name}}"), "/WEB");
    assert_eq!(render(r#"{{lower "MiXeD"}}"#), "mixed");
    assert_eq!(
        render(r#"{{title "hello big-world foo_bar"}}"#),
        "Hello Big-World Foo_bar"
    );
    assert_eq!(render(r#"{{split "a:b::c" ":"}}"#), "[a b  c]");
    assert_eq!(render(r#"{{len (split "a,b" ",")}}"#), "2");
    assert_eq!(render(r#"[{{pad "x" 2 1}}][{{pad "" 2 1}}]"#), "[  x ][]");
    assert_eq!(
        render(r#"{{truncate .Id 3}}|{{truncate "ab" 5}}"#),
        "abc|ab"
    );
    assert_eq!(render(r#"{{truncate "héllo" 2}}"#), "h");
    assert!(render_err("{{upper .State.Pid}}")
        .contains("wrong type for value; expected string; got int"));
    assert!(render_err("{{upper .Nope}}").contains("invalid value; expected string"));
}

#[test]
fn nested_parentheses() {
    assert_eq!(render("{{len (index .A 0)}}"), "3");
    assert_eq!(render("{{len (index (index .A 0) 0 | print)}}"), "1");
    assert_eq!(
        render(r#"{{upper (printf "%s-%d" (index .Names 0) (len .Names))}}"#),
        "WEB-2"
    );
}

#[test]
fn table_format() {
    let t = Template::parse(r"table {{.ID}}\t{{.Image}}").expect("parses");
    assert!(t.is_table());
    assert_eq!(t.fields(), vec!["ID".to_string(), "Image".to_string()]);
    let row = json!({"ID": "abc", "Image": "alpine"});
    assert_eq!(t.render(&row).expect("renders"), "abc\talpine");

    let t = Template::parse(r#"table {{.ID}}\n{{join .Names ","}}"#).expect("parses");
    assert_eq!(t.fields(), vec!["ID".to_string(), "Names".to_string()]);
    let row = json!({"ID": "x", "Names": ["a", "b"]});
    assert_eq!(t.render(&row).expect("renders"), "x\na,b");

    let t = Template::parse(r"{{.ID}}\t{{.Image}}").expect("parses");
    assert!(!t.is_table());
    assert_eq!(
        t.render(&json!({"ID": 1, "Image": 2})).expect("renders"),
        r"1\t2"
    );

    let t = Template::parse("table").expect("parses");
    assert!(t.is_table());
    assert!(t.fields().is_empty());
    assert!(!Template::parse("tables {{.X}}").expect("parses").is_table());

    let t = Template::parse("{{if .A}}{{.B.C}}{{end}}{{range .D}}{{.E}}{{end}}{{$.F}}")
        .expect("parses");
    assert_eq!(t.fields(), vec!["A", "B.C", "D", "F"]);
}

#[test]
fn trim_markers() {
    assert_eq!(render("a  {{- .Name -}}  b"), "a/webb");
    assert_eq!(render("a \n {{- .Name}} b"), "a/web b");
    assert_eq!(render("a {{.Name -}} \n\t b"), "a /webb");
    assert_eq!(
        render("{{range .Names -}}\n  {{.}}\n{{- end}}"),
        "webfrontend"
    );
    // `{{-3}}` is the number -3, not a trim marker.
    assert_eq!(render("x {{-3}}"), "x -3");
}

#[test]
fn comments() {
    assert_eq!(render("a{{/* hidden */}}b"), "ab");
    assert_eq!(render("a {{- /* hidden */ -}} b"), "ab");
    parse_err("{{/* never closed }}");
    parse_err("{{/* x */ .Name}}");
}

#[test]
fn parse_errors() {
    let e = parse_err("{{.Name");
    assert!(e.contains("unclosed action"), "{e}");
    let e = parse_err("x {{nosuch .Name}}");
    assert_eq!(e, r#"template: :1:4: function "nosuch" not defined"#);
    let e = parse_err("a{{end}}");
    assert!(e.contains("unexpected {{end}}"), "{e}");
    assert!(parse_err("{{else}}").contains("unexpected {{else}}"));
    assert!(parse_err("{{if .A}}x").contains("unexpected EOF"));
    assert!(parse_err("{{range .A}}x{{else}}y").contains("unexpected EOF"));
    assert!(parse_err("{{$x}}").contains(r#"undefined variable "$x""#));
    assert!(parse_err(r#"{{"open}}"#).contains("unterminated quoted string"));
    assert!(parse_err("{{(.A}}").contains("unclosed left paren"));
    assert!(parse_err("{{.A)}}").contains("unexpected right paren"));
    assert!(parse_err("{{}}").contains("missing value for command"));
    assert!(parse_err("{{.A |}}").contains("missing command after |"));
    assert!(parse_err("{{break}}").contains("outside {{range}}"));
    assert!(parse_err(r#"{{template "x"}}"#).contains("not supported"));
    assert!(parse_err("{{.A | 3}}").contains("non executable command"));
    assert!(parse_err("{{nil}}").contains("nil is not a command"));
    assert!(parse_err("{{12ab}}").contains("bad number syntax"));
    assert!(parse_err("{{#}}").contains("unrecognized character"));
    assert!(parse_err(r#"{{"a\q"}}"#).contains("escape"));
    assert!(parse_err("{{if 1}}{{$v := 1}}{{end}}{{$v}}").contains("undefined variable"));
}

#[test]
fn deep_nesting_is_rejected_not_overflowed() {
    let ok = format!("{{{{{}1{}}}}}", "(".repeat(150), ")".repeat(150));
    assert_eq!(render(&ok), "1");
    let deep = format!("{{{{{}1{}}}}}", "(".repeat(5000), ")".repeat(5000));
    assert!(parse_err(&deep).contains("nested too deeply"));
    let ifs = format!("{}x{}", "{{if 1}}".repeat(5000), "{{end}}".repeat(5000));
    assert!(parse_err(&ifs).contains("nested too deeply"));
}

#[test]
fn value_printing_like_go() {
    assert_eq!(
        render("{{.Ratio}} {{.Big}} {{.Tiny}} {{.Count}}"),
        "0.25 1.2345678e+07 1e-05 3"
    );
    assert_eq!(render("{{.Names}}"), "[web frontend]");
    assert_eq!(
        render("{{.Config.Labels}}"),
        "map[a.b:dotted com.example:x z:last]"
    );
    assert_eq!(
        render("{{.State}}"),
        "map[ExitCode:0 Health:<nil> Pid:4242 Running:true]"
    );
    assert_eq!(render("{{.A}}"), "[[1 2 3] []]");
    assert_eq!(
        render("{{true}} {{1.50}} {{0x1F}} {{1e3}} {{'a'}}"),
        "true 1.5 31 1000 97"
    );
    assert_eq!(fmt_g(1e6, None, false), "1e+06");
    assert_eq!(fmt_g(123456.0, None, false), "123456");
    assert_eq!(fmt_g(0.0001, None, false), "0.0001");
    assert_eq!(fmt_g(-2.5, None, false), "-2.5");
    assert_eq!(fmt_g(1234.5678, Some(3), false), "1.23e+03");
}

#[test]
fn literals_and_escapes() {
    assert_eq!(render(r#"{{"a\tb\x41\u00e9\101\\"}}"#), "a\tbAéA\\");
    assert_eq!(render(r"{{`raw\n`}}"), r"raw\n");
    assert_eq!(render(r#"{{print 'x' "y"}}"#), "120y");
    assert_eq!(render("{{print nil}}"), "<nil>");
}

#[test]
fn variables() {
    assert_eq!(render("{{$n := .Name}}{{$n}}"), "/web");
    assert_eq!(render("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}"), "2");
    assert!(render("{{$}}").starts_with("map[A:[[1 2 3] []]"));
    assert_eq!(
        render("{{with .State}}{{$.Name}}:{{.Pid}}{{end}}"),
        "/web:4242"
    );
    assert_eq!(render("{{$m := index .Mounts 0}}{{$m.Type}}"), "bind");
}

#[test]
fn logic_and_comparison() {
    assert_eq!(render("{{and .State.Running .Name}}"), "/web");
    assert_eq!(render("{{and .Nope (index .Names 99)}}"), "<no value>");
    assert_eq!(render(r#"{{or .Nope "" "fallback"}}"#), "fallback");
    assert_eq!(render("{{not .State.Running}}"), "false");
    assert_eq!(render(r#"{{eq .Name "/db" "/web"}}"#), "true");
    assert_eq!(render("{{eq .State.ExitCode 0.0}}"), "true");
    assert_eq!(render("{{ne .State.Pid 1}}"), "true");
    assert_eq!(
        render(r#"{{lt 1 2}} {{le 2 2}} {{gt "b" "a"}} {{ge 1 2.5}}"#),
        "true true true false"
    );
    assert_eq!(
        render("{{if and .State.Running (gt .State.Pid 100)}}big{{end}}"),
        "big"
    );
    assert!(render_err(r#"{{eq .Name 1}}"#).contains("incompatible types for comparison"));
    assert!(render_err("{{lt true false}}").contains("invalid type for comparison"));
}

#[test]
fn print_functions() {
    assert_eq!(render(r#"{{print 1 2 "a" 3 "b" "c"}}"#), "1 2a3bc");
    assert_eq!(render(r#"{{println "a" 1}}"#), "a 1\n");
    assert_eq!(
        render(r#"{{html "<a href='x'>&"}}"#),
        "&lt;a href=&#39;x&#39;&gt;&amp;"
    );
    assert_eq!(render(r#"{{urlquery "a b&c/d"}}"#), "a+b%26c%2Fd");
    assert_eq!(
        render(r#"{{slice "hello" 1 3}} {{slice .Names 1}}"#),
        "el [frontend]"
    );
}

#[test]
fn pipeline_argument_errors() {
    assert!(render_err(r#"{{.Name "x"}}"#).contains("Name is not a method but has arguments"));
    assert!(render_err(r#"{{"x" 1}}"#).contains("can't give argument to non-function"));
    assert!(render_err("{{not 1 2}}").contains("wrong number of args for not: want 1 got 2"));
    assert!(render_err("{{len .Nope}}").contains("error calling len"));
}
