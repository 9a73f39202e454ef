//! The differential corpus on the aws provider, against a local moto
//! server: `fixtures/corpus/aws_network` (a VPC, subnets by for_each and
//! count, security groups with `dynamic "ingress"` blocks, one
//! create_before_destroy, topics, a queue whose policy is a policy
//! document, data sources (region, zones, the VPC read back), a bucket
//! module with a nested module, many root outputs, and two provider
//! configurations) and a script of edits run by [`crate::corpus::run`],
//! compared with terraform's own plan on the stored state after each edit,
//! as in `corpus::`. What `terraform_data` cannot show is here: nested
//! blocks, provider blocks (their `default_tags`, a variable they read, a
//! resource moving to an alias), data sources of a real provider, and
//! refresh: objects changed outside terraform (by boto3, on the same
//! server) before a plan.
//!
//! An aws terraform command costs seconds here (the provider's start-up and
//! schema), so stategraph applies the plan it was compared on (`plan -out`,
//! `apply FILE`) and `plan -verify` is off: the comparison is the check.

use crate::common::moto::Moto;
use crate::common::terraform::{mirror_cli_config, plugin_mirror};
use crate::corpus::{run, step, Setup};

#[test]
fn aws_network() {
    let moto = Moto::start();
    let ingress = |rules: &[(&str, &str, &str)]| {
        let rules: Vec<String> = rules
            .iter()
            .map(|(port, cidr, what)| {
                format!("  {{ port = {port}, cidr_blocks = [\"{cidr}\"], description = \"{what}\" }},\n")
            })
            .collect();
        format!("ingress = [\n{}]\n", rules.concat())
    };
    let https = ("443", "0.0.0.0/0", "https");
    let http = ("80", "10.0.0.0/8", "http");
    let three_azs = "azs = [\"us-east-1a\", \"us-east-1b\", \"us-east-1c\"]\n";
    run(
        Setup {
            name: "aws_network",
            cli_config: mirror_cli_config(&plugin_mirror()),
            env: vec![("TF_VAR_endpoint".to_owned(), moto.endpoint())],
            verify: false,
            saved_plans: true,
        },
        vec![
            step("first apply"),
            step("an ingress rule added to a dynamic block (tfvars)")
                .write("terraform.tfvars", ingress(&[https, http])),
            step("the default provider's default_tags edited").replace(
                "providers.tf",
                "stack = \"network\"",
                "stack = \"network\"\n      team  = \"platform\"",
            ),
            step("a topic moved to the aliased provider").replace(
                "main.tf",
                "resource \"aws_sns_topic\" \"events\" {\n",
                "resource \"aws_sns_topic\" \"events\" {\n  provider = aws.audit\n",
            ),
            step("the aliased provider's tags, a variable, from TF_VAR_")
                .env("TF_VAR_audit_tags", "{ audited = \"2026\" }"),
            step("an availability zone added (a for_each key and a count)").write(
                "terraform.tfvars",
                format!("{}{three_azs}", ingress(&[https, http])),
            ),
            step("the web group's description changed (create_before_destroy replacement)")
                .replace(
                    "main.tf",
                    "description = \"web tier\"",
                    "description = \"web and api tier\"",
                ),
            step("a parameter deleted outside terraform, the retention edited (refresh)")
                .outside(|| moto.boto3("client('ssm').delete_parameter(Name='/corpus/retention')"))
                .write(
                    "terraform.tfvars",
                    format!(
                        "{}{three_azs}retention_seconds = 86400\n",
                        ingress(&[https, http])
                    ),
                ),
            step("a tag added outside terraform, -refresh-only")
                .outside(|| {
                    moto.boto3(
                        "client('sns').tag_resource(\
                         ResourceArn='arn:aws:sns:us-east-1:123456789012:corpus-alerts', \
                         Tags=[{'Key': 'owner', 'Value': 'oncall'}])",
                    )
                })
                .args(&["-refresh-only"]),
            step("a topic renamed with a moved block, an output added")
                .replace(
                    "main.tf",
                    "resource \"aws_sns_topic\" \"alerts\" {",
                    "resource \"aws_sns_topic\" \"alarms\" {",
                )
                .write(
                    "moved.tf",
                    "moved {\n  from = aws_sns_topic.alerts\n  to   = aws_sns_topic.alarms\n}\n\n\
                     output \"alarms_topic\" {\n  value = aws_sns_topic.alarms.arn\n}\n",
                ),
            step("an ingress rule removed, an edit in the nested module")
                .write(
                    "terraform.tfvars",
                    format!("{}{three_azs}retention_seconds = 86400\n", ingress(&[http])),
                )
                .replace(
                    "modules/parameter/main.tf",
                    "type  = \"String\"",
                    "type  = \"String\"\n  description = \"where the artifacts are\"",
                ),
            step("-replace of a subnet").args(&["-replace=aws_subnet.public[1]"]),
            step("-destroy, planned").args(&["-destroy"]).plan_only(),
        ],
    );
}
